"""`python -m bench.memory`: peak memory (VmHWM) of a real service worker while it decodes worst-case images.

Each scenario starts a fresh `python -m service` worker (one process, the embedded stack), warms it up with one
ordinary photo, then sends `--concurrency` concurrent `POST /v1/detect` of one worst-case image (or a mix) and
reads the worker's peak resident set size (`VmHWM` in `/proc/<pid>/status`, the kernel's own high-water mark, so
no short peak is missed between samples) and its RSS a moment after the burst.

The worst cases are just under the default 40 MP pixel limit and far under the 10 MB byte limit:
- `png_rgba`: a single-colour half-transparent RGBA PNG of 6300 x 6300 (about 170 KB);
- `jpeg_progressive`: a 6300 x 6300 progressive JPEG without chroma subsampling (about 1.2 MB; progressive
  decoding keeps every DCT coefficient of the image in memory);
- `tiff16`: a 16-bit grayscale TIFF of 6300 x 6300, deflate with a predictor (about 350 KB);
- `webp`: a lossy WebP of 6300 x 6300 (about 180 KB; Pillow's WebP decoding holds four RGBA copies of it);
- `mixed`: the first three in turn;
- `photo_2560` (not run by default): an ordinary 2560 x 2560 JPEG, nothing to save in decoding: what the rest of
  the face path (the detector at 1280 px) holds per concurrent request.

The figures are printed and written into `docs/memory.md` between markers named by `--label` (e.g. `before` for
the code before a change, `after` for it), so the page keeps both runs; the command that made them goes with them.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.machine import machine

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "memory.md"
SIDE = 6300  # 39.7 MP: just under the default max_image_pixels of 40 MP
MIB = 1024 * 1024

Upload = tuple[str, bytes, str]  # file name, bytes, content type


# --- worst-case images ------------------------------------------------------------------------------------------


def png_rgba(side: int = SIDE) -> Upload:
    """A single-colour, half-transparent RGBA PNG: a few hundred KB that decode to side^2 * 4 bytes."""
    buf = io.BytesIO()
    Image.new("RGBA", (side, side), (90, 160, 200, 128)).save(buf, format="PNG")
    return "rgba.png", buf.getvalue(), "image/png"


def _pattern(side: int) -> np.ndarray:
    """A smooth side x side RGB colour pattern (compresses well, decodes to full size)."""
    y, x = np.ogrid[0:side, 0:side]
    pixels = np.empty((side, side, 3), dtype=np.uint8)
    pixels[..., 0] = x * 255 // side
    pixels[..., 1] = y * 255 // side
    pixels[..., 2] = (x + y) // 16 % 256
    return pixels


def jpeg_progressive(side: int = SIDE) -> Upload:
    """A smooth colour pattern as a progressive 4:4:4 JPEG: libjpeg holds side^2 * 3 DCT coefficients (2 bytes
    each) for a progressive image, whatever scale it decodes to."""
    buf = io.BytesIO()
    Image.fromarray(_pattern(side)).save(buf, format="JPEG", quality=90, progressive=True, subsampling=0)
    return "large.jpg", buf.getvalue(), "image/jpeg"


def tiff16(side: int = SIDE) -> Upload:
    """A 16-bit grayscale gradient TIFF, deflate with horizontal differencing (TIFF predictor 2)."""
    y, x = np.ogrid[0:side, 0:side]
    values = (x.astype(np.uint32) * 40_000 // side + y.astype(np.uint32) * 25_535 // side).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, format="TIFF", compression="tiff_adobe_deflate", tiffinfo={317: 2})
    return "deep.tif", buf.getvalue(), "image/tiff"


def webp(side: int = SIDE) -> Upload:
    """The pattern of `jpeg_progressive` as a fast lossy WebP."""
    buf = io.BytesIO()
    Image.fromarray(_pattern(side)).save(buf, format="WEBP", quality=50, method=0)
    return "large.webp", buf.getvalue(), "image/webp"


def photo_2560() -> Upload:
    y, x = np.ogrid[0:2560, 0:2560]
    pixels = np.stack(np.broadcast_arrays(x * 255 // 2560, y * 255 // 2560, (x ^ y) % 256), axis=-1)
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="JPEG", quality=85)
    return "photo.jpg", buf.getvalue(), "image/jpeg"


MAKERS: dict[str, Callable[[], Upload]] = {"png_rgba": png_rgba, "jpeg_progressive": jpeg_progressive,
                                           "tiff16": tiff16, "webp": webp, "photo_2560": photo_2560}
MIXED = ("png_rgba", "jpeg_progressive", "tiff16")
DEFAULT = ["png_rgba", "jpeg_progressive", "tiff16", "webp", "mixed"]


def warmup_photo() -> Upload:
    """An ordinary 1600 x 1200 JPEG: the detector runs at its full input size once before the burst."""
    y, x = np.ogrid[0:1200, 0:1600]
    pixels = np.stack(np.broadcast_arrays(x * 255 // 1600, y * 255 // 1200, (x ^ y) % 256), axis=-1)
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="JPEG", quality=85)
    return "warmup.jpg", buf.getvalue(), "image/jpeg"


# --- a real worker ----------------------------------------------------------------------------------------------


def proc_status_kib(pid: int, key: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmRSS: resident now, VmHWM: the peak resident set so far)."""
    match = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {key} in /proc/{pid}/status")
    return int(match.group(1))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Worker:
    """`python -m service` on a free loopback port with a throw-away store (one uvicorn process)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="anyface-memory-")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(self.tmp.name) / "service.log"
        self.env = {**os.environ, "ANYFACE_PORT": str(self.port), "ANYFACE_HOST": "127.0.0.1", "ANYFACE_WORKERS": "1",
                    "ANYFACE_API_KEYS": "", "ANYFACE_MODEL_DIR": str(REPO / "models"),
                    "ANYFACE_STORE": f"sqlite:///{self.tmp.name}/gallery.sqlite3", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Worker:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise TimeoutError(f"service on {self.url} not ready after 90 s: {self.log.read_text()[-2000:]}")

    def __exit__(self, *_: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.tmp.cleanup()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_mib(self) -> float:
        return proc_status_kib(self.pid, "VmRSS") / 1024

    def peak_mib(self) -> float:
        return proc_status_kib(self.pid, "VmHWM") / 1024


@dataclass
class Answer:
    status: int
    code: str  # the error code, or "ok"
    seconds: float
    json: bool


def post_detect(url: str, upload: Upload, timeout: float = 120.0) -> Answer:
    started = time.perf_counter()
    response = httpx.post(url + "/v1/detect", files={"image": upload}, timeout=timeout)
    elapsed = time.perf_counter() - started
    try:
        body = response.json()
    except ValueError:
        return Answer(response.status_code, "not-json", elapsed, False)
    code = "ok" if response.status_code < 300 else str(body.get("error", {}).get("code", "?"))
    return Answer(response.status_code, code, elapsed, True)


def burst(url: str, uploads: list[Upload]) -> list[Answer]:
    """Every upload at once, one thread each, released together."""
    answers: list[Answer | None] = [None] * len(uploads)
    gate = threading.Barrier(len(uploads))

    def send(i: int) -> None:
        gate.wait()
        try:
            answers[i] = post_detect(url, uploads[i])
        except httpx.HTTPError as exc:  # a dropped connection (e.g. the worker was killed) is an answer too
            answers[i] = Answer(0, type(exc).__name__, 0.0, False)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(uploads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [a for a in answers if a is not None]


@dataclass
class Scenario:
    name: str
    upload_bytes: list[int]
    ready_mib: float = 0.0
    warm_peak_mib: float = 0.0
    peak_mib: float = 0.0
    after_mib: float = 0.0
    later_mib: float = 0.0
    seconds: float = 0.0
    answers: list[Answer] = field(default_factory=list)

    def codes(self) -> str:
        counts: dict[str, int] = {}
        for a in self.answers:
            key = f"{a.status} {a.code}"
            counts[key] = counts.get(key, 0) + 1
        return ", ".join(f"{n} x {k}" for k, n in sorted(counts.items()))


def run_scenario(name: str, uploads: list[Upload], env: dict[str, str] | None = None) -> Scenario:
    result = Scenario(name, [len(u[1]) for u in uploads])
    with Worker(env) as worker:
        result.ready_mib = worker.rss_mib()
        warm = post_detect(worker.url, warmup_photo())
        if warm.status != 200:
            raise RuntimeError(f"warm-up answered {warm.status} {warm.code}: {worker.log.read_text()[-3000:]}")
        result.warm_peak_mib = worker.peak_mib()
        started = time.perf_counter()
        result.answers = burst(worker.url, uploads)
        result.seconds = time.perf_counter() - started
        result.peak_mib = worker.peak_mib()
        time.sleep(2.0)
        result.after_mib = worker.rss_mib()
        time.sleep(13.0)  # idle worker threads retire after 10 s, and what they hold with them
        result.later_mib = worker.rss_mib()
    return result


def scenarios(concurrency: int, names: list[str]) -> dict[str, list[Upload]]:
    images = {name: MAKERS[name]() for name in MAKERS if name in names or ("mixed" in names and name in MIXED)}
    out = {name: [images[name]] * concurrency for name in MAKERS if name in names}
    if "mixed" in names:
        out["mixed"] = mixed([images[name] for name in MIXED], concurrency)
    return out


def mixed(images: list[Upload], concurrency: int) -> list[Upload]:
    return [images[i % len(images)] for i in range(concurrency)]


# --- report -----------------------------------------------------------------------------------------------------


def table(results: list[Scenario], concurrency: int) -> str:
    rows = [f"| scenario ({concurrency} concurrent /v1/detect) | upload | RSS ready | peak after warm-up | "
            "**peak (VmHWM)** | RSS 2 s after | RSS 15 s after | wall | answers |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        size = "/".join(f"{b / 1024:.0f} KB" for b in sorted(set(r.upload_bytes)))
        rows.append(f"| {r.name} | {size} | {r.ready_mib:.0f} MiB | {r.warm_peak_mib:.0f} MiB | "
                    f"**{r.peak_mib:.0f} MiB** | {r.after_mib:.0f} MiB | {r.later_mib:.0f} MiB | {r.seconds:.1f} s | "
                    f"{r.codes()} |")
    return "\n".join(rows)


def write_block(doc: Path, label: str, text: str) -> None:
    """Replace (or append) the block between `<!-- bench.memory LABEL -->` markers, keeping the rest."""
    begin, end = f"<!-- bench.memory {label} begin -->", f"<!-- bench.memory {label} end -->"
    block = f"{begin}\n{text}\n{end}"
    current = doc.read_text() if doc.exists() else "# Memory\n"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        _, tail = rest.split(end, 1)
        current = head + block + tail
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(current)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n")[0])
    parser.add_argument("--label", default="after", help="the block of docs/memory.md to write (before/after)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--scenarios", nargs="+", default=DEFAULT, choices=[*MAKERS, "mixed"])
    parser.add_argument("--env", nargs="*", default=[], metavar="ANYFACE_X=VALUE",
                        help="settings for the worker, e.g. ANYFACE_DECODE_MEMORY_BUDGET=268435456")
    parser.add_argument("--doc", type=Path, default=DOC, help="where to write; '-' prints only")
    parser.add_argument("--code", default="", help="what code the worker ran, when not this checkout's commit")
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    mirror = os.environ.get("ANYFACE_MODEL_MIRROR")
    if mirror:
        from service.models.fetch import fetch_all

        fetch_all(REPO / "models", Path(mirror))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "service"], cwd=REPO, capture_output=True,
                           text=True).stdout.strip()
    results = []
    for name, uploads in scenarios(args.concurrency, args.scenarios).items():
        result = run_scenario(name, uploads, env)
        print(f"{name}: peak {result.peak_mib:.0f} MiB (ready {result.ready_mib:.0f}, after warm-up "
              f"{result.warm_peak_mib:.0f}, 2 s after {result.after_mib:.0f}, 15 s after {result.later_mib:.0f}), "
              f"{result.seconds:.1f} s, "
              f"{result.codes()}", flush=True)
        results.append(result)
    command = "python -m bench.memory " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    code = args.code or f"code at {commit}{' with uncommitted changes in service/' if dirty else ''}"
    host = machine(f"Pillow {Image.__version__}")
    text = (f"`{command.strip()}` on {host}, {time.strftime('%Y-%m-%d')}, {code}"
            f"{', worker settings ' + ' '.join(args.env) if args.env else ''}:\n\n{table(results, args.concurrency)}")
    print(text)
    if str(args.doc) != "-":
        write_block(args.doc, args.label, text)
        print(f"written to {args.doc} (block '{args.label}')")


if __name__ == "__main__":
    main()
