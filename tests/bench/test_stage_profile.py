"""py-spy's collapsed stacks become stage shares: parsing (process frames whose command line holds ';'), the
stage of a stack, a real recording of a running Python process, and the flame graph."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from PIL import Image

from bench.stage_profile import OTHER, Profile, flame_png, record, stage_of

WORKER = 'process 12:"python -c from multiprocessing.spawn import spawn_main; spawn_main(pipe_handle=9) --fork"'
EMBED = ("Thread._bootstrap (threading.py:1002);_worker (concurrent/futures/thread.py:83);"
         "EmbeddingBackend.embed (service/embedding/backend.py:62);run (service/sessions/onnxruntime.py:51);"
         "Session.run (onnxruntime/capi/onnxruntime_inference_collection.py:406)")
MULTIPART = ("Runner.run (asyncio/runners.py:118);app (starlette/routing.py:73);"
             "MultiPartParser.parse (starlette/formparsers.py:250);write (python_multipart/multipart.py:1100)")
JSON_IN_API = "identify (service/api/routes/identify.py:40);dumps (json/__init__.py:231)"


def test_parse_drops_process_frames_and_sums_counts() -> None:
    text = "\n".join([f'process 11:"python -m service";{WORKER};{EMBED} 30', f"{WORKER};{MULTIPART} 10",
                      f"{EMBED} 5", "garbage line", f"{JSON_IN_API} 5"])
    profile = Profile.parse(text)
    assert profile.samples == 50
    assert all(not f.startswith(("process ", " spawn_main")) for stack in profile.stacks for f in stack)
    assert profile.stacks[tuple(EMBED.split(";"))] == 35
    assert profile.stage_shares() == {"embedding": 0.7, "multipart parsing": 0.2, "JSON": 0.1}


def test_stage_is_the_first_frame_from_the_leaf_that_names_one() -> None:
    assert stage_of(tuple(EMBED.split(";"))) == "embedding"  # the model's run counts for the module calling it
    assert stage_of(tuple(MULTIPART.split(";"))) == "multipart parsing"
    assert stage_of(tuple(JSON_IN_API.split(";"))) == "JSON"
    assert stage_of(("main (somewhere/else.py:1)",)) == OTHER


def test_record_samples_a_running_python_process(tmp_path: Path) -> None:
    script = tmp_path / "busy.py"
    script.write_text(textwrap.dedent("""
        import time
        def spin(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                sum(range(1000))
        spin(6)
    """))
    busy = subprocess.Popen([sys.executable, str(script)])
    try:
        time.sleep(0.5)
        out = tmp_path / "raw.txt"
        spy = record(busy.pid, 2, out, rate=50)
        _, err = spy.communicate(timeout=30)
        assert spy.returncode == 0, err.decode(errors="replace")
    finally:
        busy.kill()
        busy.wait()
    profile = Profile.parse(out.read_text())
    assert profile.samples >= 40  # 2 s at 50 Hz, with some slack
    in_spin = sum(n for stack, n in profile.stacks.items() if any(f.startswith("spin (") for f in stack))
    assert in_spin / profile.samples > 0.9


def test_flame_png_draws_the_profile(tmp_path: Path) -> None:
    profile = Profile.parse(f"{EMBED} 30\n{MULTIPART} 10\n")
    path = tmp_path / "flame.png"
    flame_png(profile, path, "test")
    with Image.open(path) as image:
        assert image.width > 1000 and image.height > 500
