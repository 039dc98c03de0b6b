"""`anyface`: the command line over the REST API.

Exit codes, for scripts: 0 everything done; 1 done, but some photos were refused (no face, low quality, ...) or
some answers were negative (verify: not a match; identify: a photo with no face); 2 wrong usage; 3 the service
could not be reached or stayed unavailable; 4 the key was refused (401, 403); 5 a gallery or subject does not
exist, or the gallery belongs to another embedder (404, 409); 130 interrupted (Ctrl-C)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from client.api import DEFAULT_URL, AnyFace, ApiError, Unreachable
from client.enroll import Enroller, Summary
from client.plan import IMAGE_SUFFIXES, PlanError, read_plan

OK, PARTIAL, USAGE, UNREACHABLE, DENIED, MISSING, INTERRUPTED = 0, 1, 2, 3, 4, 5, 130


def _photos(paths: list[Path]) -> Iterator[Path]:
    """The photos named, folders expanded to their images (recursively, in name order)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def _emit(args: argparse.Namespace, records: list[dict[str, Any]], header: list[str],
          row: Callable[[dict[str, Any]], list[str]]) -> None:
    if args.json:
        for record in records:
            print(json.dumps(record))
    elif records:
        print(_table([row(r) for r in records], header))


# -- commands -------------------------------------------------------------------------------------------------------
def cmd_enroll(client: AnyFace, args: argparse.Namespace) -> int:
    try:
        plans = read_plan(args.source)
    except PlanError as exc:
        print(f"anyface enroll: {exc}", file=sys.stderr)
        return USAGE
    if not plans:
        print(f"anyface enroll: {args.source}: no subject with photos", file=sys.stderr)
        return USAGE
    enroller = Enroller(client, args.gallery, batch=args.batch, allow_multiple=args.allow_multiple)
    summary = enroller.run(plans, concurrency=args.concurrency, progress=not args.quiet)
    _report(summary, args)
    if summary.interrupted:
        return INTERRUPTED
    return PARTIAL if summary.refused else OK


def _report(summary: Summary, args: argparse.Namespace) -> None:
    counts = summary.counts
    done = counts["enrolled"] + counts["skipped"] + counts["refused"]
    rate = counts["enrolled"] / summary.seconds if summary.seconds else 0.0
    print(f"{'interrupted: ' if summary.interrupted else ''}{counts['enrolled']} photos enrolled, "
          f"{counts['skipped']} already enrolled (skipped), {counts['refused']} refused, of {done} handled "
          f"in {summary.seconds:.1f} s ({rate:.1f} photos/s enrolled)", file=sys.stderr)
    if args.report:
        with Path(args.report).open("w") as f:
            for r in summary.results:
                f.write(json.dumps(r.__dict__) + "\n")
        print(f"every photo's result: {args.report}", file=sys.stderr)
    refused = summary.refused
    if refused:
        shown = refused[:20]
        print(_table([[r.subject_id, r.path, r.code or "", (r.message or "")[:80]] for r in shown],
                     ["subject", "photo", "code", "reason"]), file=sys.stderr)
        if len(refused) > len(shown):
            print(f"... and {len(refused) - len(shown)} more (--report FILE lists them all)", file=sys.stderr)


def cmd_job(client: AnyFace, args: argparse.Namespace) -> int:
    """Submit a zip as a server-side job (or follow one by id) with a progress bar until it is done."""
    if args.archive.suffix.lower() == ".zip":
        job = client.submit_job(args.gallery, args.archive, args.allow_multiple)
        print(f"job {job['job_id']}: {job['photos']} files", file=sys.stderr)
    else:
        job = client.job(str(args.archive))
    bar = tqdm(total=job["photos"], unit="photo", desc=f"job {job['job_id'][:8]}", disable=args.quiet)
    while True:
        bar.update(job["handled"] - bar.n)
        bar.set_postfix(enrolled=job["enrolled"], skipped=job["skipped"], refused=job["refused"], refresh=False)
        if job["status"] in ("done", "failed") or args.no_wait:
            break
        time.sleep(0.5)
        job = client.job(job["job_id"])
    bar.close()
    print(f"job {job['job_id']} {job['status']}: {job['enrolled']} enrolled, {job['skipped']} already enrolled, "
          f"{job['refused']} refused of {job['photos']}" + (f"; {job['error']}" if job.get("error") else ""),
          file=sys.stderr)
    if args.report and job["status"] in ("done", "failed"):
        with Path(args.report).open("w") as f:
            for result in client.job_results(job["job_id"]):
                f.write(json.dumps(result) + "\n")
    if job["status"] == "failed":
        return UNREACHABLE
    return PARTIAL if job["refused"] else OK


def cmd_identify(client: AnyFace, args: argparse.Namespace) -> int:
    records, missing = [], False
    for photo in _photos(args.photos):
        try:
            answer = client.identify(photo, args.gallery, args.top_k, args.all_faces)
        except ApiError as exc:
            if exc.status in (401, 403, 404, 409):
                raise
            records.append({"photo": str(photo), "error": {"code": exc.code, "message": exc.message}})
            missing = True
            continue
        records.append({"photo": str(photo), **answer})

    def row(r: dict[str, Any]) -> list[str]:
        if "error" in r:
            return [r["photo"], "-", r["error"]["code"], ""]
        best = [f["candidates"][0] if f["candidates"] else None for f in r["faces"]]
        return [r["photo"], str(len(r["faces"])),
                "; ".join(f"{b['name'] or b['subject_id']} ({b['subject_id']})" if b else "unknown" for b in best),
                "; ".join(f"{b['similarity']:.3f}" if b else "" for b in best)]

    _emit(args, records, ["photo", "faces", "best candidate", "similarity"], row)
    return PARTIAL if missing else OK


def cmd_verify(client: AnyFace, args: argparse.Namespace) -> int:
    if args.subject:
        if not args.gallery or len(args.photos) != 1:
            print("anyface verify PHOTO --gallery G --subject S", file=sys.stderr)
            return USAGE
        answer = client.verify_subject(args.photos[0], args.gallery, args.subject)
    else:
        if len(args.photos) != 2:
            print("anyface verify PHOTO_A PHOTO_B (or PHOTO --gallery G --subject S)", file=sys.stderr)
            return USAGE
        answer = client.verify(*args.photos)
    _emit(args, [answer], ["match", "similarity", "threshold"],
          lambda r: ["yes" if r["match"] else "no", f"{r['similarity']:.3f}", f"{r['threshold']:.3f}"])
    return OK if answer["match"] else PARTIAL


def cmd_detect(client: AnyFace, args: argparse.Namespace) -> int:
    records, failed = [], False
    for photo in _photos(args.photos):
        try:
            records.append({"photo": str(photo), **client.detect(photo)})
        except ApiError as exc:
            if exc.status in (401, 403):
                raise
            records.append({"photo": str(photo), "faces": [], "error": {"code": exc.code, "message": exc.message}})
            failed = True
    rows = [{"photo": r["photo"], "face": i + 1, **f} for r in records for i, f in enumerate(r["faces"])]
    if args.json:
        for record in records:
            print(json.dumps(record))
    else:
        print(_table([[r["photo"], str(r["face"]), f"{r['score']:.2f}", f"{r['size']:.0f}", f"{r['quality']:.2f}",
                       f"{r['branch']} ({r['resolution']} px)"] for r in rows],
                     ["photo", "face", "score", "size", "quality", "branch"]))
    return PARTIAL if failed else OK


def cmd_galleries(client: AnyFace, args: argparse.Namespace) -> int:
    if args.action == "list":
        galleries = client.galleries()
        _emit(args, galleries, ["gallery", "subjects", "faces", "index", "embedder"],
              lambda g: [g["name"], str(g["subjects"]), str(g["faces"]), g["index_type"], g["embedder"] or "-"])
        return OK
    if not args.name:
        print(f"anyface galleries {args.action} NAME", file=sys.stderr)
        return USAGE
    if args.action == "export":
        out = Path(args.output or f"{args.name}.jsonl")
        with out.open("wb") as f:
            size = client.export(args.name, f)
        last = out.read_bytes()[-200:].strip().splitlines()[-1:] if size else []
        if not last or json.loads(last[0]).get("kind") != "end":
            print(f"anyface: the export of {args.name} was cut off; {out} is incomplete", file=sys.stderr)
            return UNREACHABLE
        print(f"exported {args.name} to {out} ({size / 1e6:.1f} MB)", file=sys.stderr)
        return OK
    if args.action == "import":
        return _import(client, args)
    if args.action == "show":
        gallery = client.gallery(args.name)
        if args.json:
            print(json.dumps(gallery))
        else:
            print("\n".join(f"{k}: {v}" for k, v in gallery.items()))
        return OK
    if not args.yes:
        print(f"anyface galleries delete {args.name}: this deletes every subject and face; add --yes",
              file=sys.stderr)
        return USAGE
    client.delete_gallery(args.name)
    print(f"deleted gallery {args.name}", file=sys.stderr)
    return OK


def _import(client: AnyFace, args: argparse.Namespace) -> int:
    """Send an export in requests of at most `--chunk-mb`, each its header, a run of subject lines and an end line
    (an import adds nothing twice, so a failed run can simply be repeated)."""
    source = Path(args.file or f"{args.name}.jsonl")
    limit = int(args.chunk_mb * 1024 * 1024)
    totals = {"subjects": 0, "faces_added": 0, "faces_existing": 0}
    with source.open("rb") as f:
        header = f.readline()
        chunk: list[bytes] = []
        size = 0

        def send() -> None:
            nonlocal chunk, size
            if chunk:
                end = json.dumps({"kind": "end", "subjects": len(chunk)}).encode() + b"\n"
                answer = client.import_chunk(args.name, header + b"".join(chunk) + end)
                for key in totals:
                    totals[key] += answer[key]
            chunk, size = [], 0

        for line in f:
            if line.strip() and json.loads(line).get("kind") == "end":
                break
            if size + len(line) > limit:
                send()
            chunk.append(line)
            size += len(line)
        send()
    print(f"imported into {args.name}: {totals['subjects']} subjects, {totals['faces_added']} faces added, "
          f"{totals['faces_existing']} already there", file=sys.stderr)
    return OK


# -- the parser -----------------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="anyface", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default=os.environ.get("ANYFACE_URL", DEFAULT_URL),
                   help="the service (env ANYFACE_URL; default %(default)s)")
    p.add_argument("--key", default=os.environ.get("ANYFACE_API_KEY"), help="API key (env ANYFACE_API_KEY)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default %(default)s)")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("enroll", help="enrol a folder (one sub-folder per subject) or a manifest (CSV/JSON Lines)")
    e.add_argument("gallery")
    e.add_argument("source", type=Path, help="folder of sub-folders named by subject id, or a manifest with "
                                             "columns path, subject_id[, name][, metadata]")
    e.add_argument("--concurrency", type=int, default=4, help="subjects enrolled at once (default %(default)s)")
    e.add_argument("--batch", type=int, default=8, help="photos per request, at most the service's "
                                                        "max_images_per_request (default %(default)s)")
    e.add_argument("--allow-multiple", action="store_true", help="enrol the largest face of a group photo")
    e.add_argument("--report", help="write every photo's result here (JSON Lines)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(run=cmd_enroll)

    j = sub.add_parser("job", help="enrol a zip of subject folders as a server-side job and follow it (or follow "
                                   "a job by id)")
    j.add_argument("gallery")
    j.add_argument("archive", type=Path, help="a .zip laid out like the enroll folder, or a job id to follow")
    j.add_argument("--allow-multiple", action="store_true")
    j.add_argument("--no-wait", action="store_true", help="submit and return")
    j.add_argument("--report", help="write every photo's result here (JSON Lines) when it is done")
    j.add_argument("--quiet", action="store_true")
    j.set_defaults(run=cmd_job)

    i = sub.add_parser("identify", help="who is in these photos (files or folders)")
    i.add_argument("gallery")
    i.add_argument("photos", type=Path, nargs="+")
    i.add_argument("--top-k", type=int, default=5)
    i.add_argument("--all-faces", action="store_true", help="every face, not only the largest")
    i.add_argument("--json", action="store_true", help="JSON Lines, one answer per photo")
    i.set_defaults(run=cmd_identify)

    v = sub.add_parser("verify", help="are two photos the same person (or a photo and an enrolled subject)")
    v.add_argument("photos", type=Path, nargs="+")
    v.add_argument("--gallery")
    v.add_argument("--subject")
    v.add_argument("--json", action="store_true")
    v.set_defaults(run=cmd_verify)

    d = sub.add_parser("detect", help="faces in photos (files or folders)")
    d.add_argument("photos", type=Path, nargs="+")
    d.add_argument("--json", action="store_true", help="JSON Lines, one answer per photo")
    d.set_defaults(run=cmd_detect)

    g = sub.add_parser("galleries", help="list, show, delete, export or import galleries")
    g.add_argument("action", nargs="?", choices=["list", "show", "delete", "export", "import"], default="list")
    g.add_argument("name", nargs="?")
    g.add_argument("file", nargs="?", help="import: the export to read (default NAME.jsonl)")
    g.add_argument("-o", "--output", help="export: the file to write (default NAME.jsonl)")
    g.add_argument("--chunk-mb", type=float, default=32.0, help="import: MB per request (default %(default)s)")
    g.add_argument("--yes", action="store_true", help="confirm a deletion")
    g.add_argument("--json", action="store_true")
    g.set_defaults(run=cmd_galleries)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "batch", 1) < 1 or getattr(args, "concurrency", 1) < 1:
        print("anyface: --batch and --concurrency are at least 1", file=sys.stderr)
        return USAGE
    client = AnyFace(args.url, args.key, args.timeout)
    try:
        code: int = args.run(client, args)
        return code
    except Unreachable as exc:
        print(f"anyface: cannot reach the service: {exc}", file=sys.stderr)
        return UNREACHABLE
    except ApiError as exc:
        print(f"anyface: {exc.code}: {exc.message}", file=sys.stderr)
        if exc.status in (401, 403):
            return DENIED
        if exc.status in (404, 409):
            return MISSING
        return UNREACHABLE if exc.status == 503 else PARTIAL
    except KeyboardInterrupt:
        return INTERRUPTED
    finally:
        client.close()
