"""Where a worker's time goes, from py-spy's collapsed stacks: each sample is given to one stage of the request
(decode, detection, landmarks, embedding, quality, multipart parsing, JSON, the event loop, ...) and a flame
graph of the stacks is drawn as a PNG.

py-spy (a PyPI package) samples the Python threads of the service's workers without stopping them; a sample is
a thread that is running or holding the GIL, so native work run from Python (ONNX Runtime, OpenCV, FAISS) shows
as the Python frame that called it. Native threads a library starts on its own (ONNX Runtime's intra-op pool,
OpenCV's) carry no Python frame and are not sampled: the shares are of the Python threads' time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# The stage of a stack is the first frame, from the leaf up, that names one. Frames of libraries a stage calls
# (ONNX Runtime, numpy) name none, so a model's run counts for the service module that called it.
STAGE_RULES: tuple[tuple[str, str], ...] = (
    ("service/imaging/decode.py", "decode"),
    ("service/imaging/budget.py", "decode"),
    ("PIL/", "decode"),
    ("service/detection/", "detection"),
    ("service/landmarks/", "landmarks"),
    ("service/imaging/roi.py", "landmarks"),
    ("service/core/quality.py", "quality"),
    ("service/imaging/align.py", "align"),
    ("service/embedding/", "embedding"),
    ("service/gallery/", "search and store"),
    ("faiss/", "search and store"),
    ("redis/", "search and store"),
    ("multipart/", "multipart parsing"),
    ("python_multipart/", "multipart parsing"),
    ("starlette/formparsers.py", "multipart parsing"),
    ("tempfile.py", "multipart parsing"),
    ("json/", "JSON"),
    ("orjson", "JSON"),
    ("pydantic/", "JSON"),
    ("fastapi/encoders.py", "JSON"),
    ("fastapi/routing.py", "HTTP framework"),
    ("starlette/", "HTTP framework"),
    ("service/api/", "HTTP framework"),
    ("prometheus_client/", "metrics"),
    ("service/metrics.py", "metrics"),
    ("anyio/", "thread hand-offs"),
    ("concurrent/futures/", "thread hand-offs"),
    ("threading.py", "thread hand-offs"),
    ("queue.py", "thread hand-offs"),
    ("uvicorn/", "event loop and HTTP parsing"),
    ("h11/", "event loop and HTTP parsing"),
    ("httptools/", "event loop and HTTP parsing"),
    ("asyncio/", "event loop and HTTP parsing"),
    ("uvloop/", "event loop and HTTP parsing"),
    ("service/core/", "core (other)"),
)
OTHER = "other"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_PROCESS = re.compile(r'^(?:process \d+:".*?";)+')  # `--subprocesses` frames; a command line may hold ";"
NEUTRAL = (0.85, 0.85, 0.85, 1.0)


@dataclass
class Profile:
    """Collapsed stacks (root first) and how many samples each had."""

    stacks: Counter[tuple[str, ...]] = field(default_factory=Counter)

    @property
    def samples(self) -> int:
        return sum(self.stacks.values())

    @classmethod
    def parse(cls, text: str) -> Profile:
        """py-spy's `--format raw` output: `frame;frame;... count` per line. The process and thread frames
        that `--subprocesses` and `--threads` add are dropped."""
        profile = cls()
        for line in text.splitlines():
            stack, _, count = _PROCESS.sub("", line).rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = tuple(f for f in stack.split(";") if not f.startswith(("process ", "thread ")))
            profile.stacks[frames] += int(count)
        return profile

    def merged(self, other: Profile) -> Profile:
        return Profile(self.stacks + other.stacks)

    def stage_shares(self) -> dict[str, float]:
        """Each stage's share of the samples, largest first."""
        counts: Counter[str] = Counter()
        for frames, n in self.stacks.items():
            counts[stage_of(frames)] += n
        total = sum(counts.values()) or 1
        return {stage: n / total for stage, n in counts.most_common()}


def frame_file(frame: str) -> str:
    match = _FRAME.match(frame)
    return match.group("file") if match else frame


def stage_of(frames: tuple[str, ...]) -> str:
    """The stage a stack (root first) belongs to."""
    for frame in reversed(frames):
        path = frame_file(frame)
        for needle, stage in STAGE_RULES:
            if needle in path:
                return stage
    return OTHER


def record(pid: int, seconds: float, out: Path, rate: int = 100) -> subprocess.Popen[bytes]:
    """Start py-spy sampling process `pid` and its children for `seconds` into `out` (raw collapsed stacks)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    cmd = [exe, "record", "--pid", str(pid), "--subprocesses", "--nonblocking", "--rate", str(rate),
           "--duration", str(max(1, round(seconds))), "--format", "raw", "--output", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def short_frame(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    name = Path(match.group("file")).name
    return f"{match.group('func')} ({name})"


def flame_png(profile: Profile, path: Path, title: str, min_share: float = 0.004) -> None:
    """An icicle flame graph (root at the top, width = share of samples, the workers' stacks merged), a frame
    coloured by its stage where at least 90 % of its samples belong to one, else grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total = profile.samples
    if not total:
        raise ValueError("no samples to draw")
    stages = [s for _, s in STAGE_RULES] + [OTHER]
    palette = plt.get_cmap("tab20")
    colour = {s: palette(i % 20) for i, s in enumerate(dict.fromkeys(stages))}

    # a tree of frames: node = (children, samples, stage counts)
    tree: dict = {"children": {}, "n": 0}
    for frames, n in profile.stacks.items():
        stage = stage_of(frames)
        node = tree
        node["n"] += n
        for frame in frames:
            node = node["children"].setdefault(frame, {"children": {}, "n": 0, "stages": Counter()})
            node["n"] += n
            node["stages"][stage] += n

    depth_max = 0
    fig, ax = plt.subplots(figsize=(16, 9))
    rects: list[tuple[float, int, float, str, str]] = []

    def walk(node: dict, x: float, depth: int) -> None:
        nonlocal depth_max
        for frame, child in sorted(node["children"].items(), key=lambda kv: -kv[1]["n"]):
            width = child["n"] / total
            if width >= min_share:
                stage, n = child["stages"].most_common(1)[0]
                rects.append((x, depth, width, short_frame(frame), stage if n >= 0.9 * child["n"] else ""))
                depth_max = max(depth_max, depth)
                walk(child, x, depth + 1)
            x += width

    walk(tree, 0.0, 0)
    for x, depth, width, label, stage in rects:
        ax.add_patch(plt.Rectangle((x, -depth - 1), width, 0.95, facecolor=colour.get(stage, NEUTRAL),
                                   edgecolor="white", linewidth=0.3))
        if width > 0.04:
            ax.text(x + 0.002, -depth - 0.5, label[: int(width * 160)], va="center", fontsize=6)
    shares = profile.stage_shares()
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour[s]) for s in shares]
    ax.legend(handles, [f"{s} {v:.0%}" for s, v in shares.items()], loc="lower right", fontsize=8, ncol=2)
    ax.set_xlim(0, 1)
    ax.set_ylim(-depth_max - 2, 0)
    ax.set_yticks([])
    ax.set_xlabel(f"share of {total} samples (Python threads of the service's workers)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
