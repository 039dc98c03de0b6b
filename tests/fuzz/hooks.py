"""Schemathesis hooks for the fuzz stage (loaded by `st run` through `SCHEMATHESIS_HOOKS=tests.fuzz.hooks`).

- The request bodies of the loaded schema: multipart properties lose their `null` alternative (a form field cannot
  be null; leaving it out is what None means), so an optional upload (`anyOf: [file, null]`) is sent as a file
  with a filename, as clients send it. Responses are checked against the schema as the service serves it.
- Positive cases of the fuzzing and stateful phases (`flatmap_case`): path parameters and the `gallery` /
  `subject_id` form fields sometimes name the seeded data (the runner enrols a few subjects first); in the fuzzing
  phase uploads are sometimes real JPEGs of faces (LFW photos, a photo of three), a third of the bodies carry the
  set of photos their operation needs, and `metadata` is sometimes a JSON object. So detection, embedding, enrolment,
  identification, verification and the operations on existing galleries, subjects and faces run, not only the
  refusals. Negative cases are left as generated: they must stay invalid.
- Every response is counted (operation x status, the first 5xx answers) into the JSON file named by
  `ANYFACE_FUZZ_STATS`, which the runner reads.

The runner passes the seeded names and the photo paths in `ANYFACE_FUZZ_SEED` (JSON).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import strategies as st
from schemathesis.transport.serialization import Binary

from service.api.params import GALLERY_PATTERN, SUBJECT_PATTERN

SEED: dict[str, Any] = json.loads(os.environ.get("ANYFACE_FUZZ_SEED", "{}"))
GALLERIES: list[str] = SEED.get("galleries", [])
SUBJECTS: list[str] = SEED.get("subjects", [])
FACE_IDS: list[int] = SEED.get("face_ids", [])
# `Binary`: bytes that validate as the schema's string, as Schemathesis's own generated files do (plain bytes would
# make Schemathesis re-label the modified case as negative)
PHOTOS: list[Binary] = [Binary(Path(p).read_bytes()) for p in SEED.get("photos", [])]
STATS_PATH = os.environ.get("ANYFACE_FUZZ_STATS")
FILE_FIELDS = ("image", "image_a", "image_b", "images")

_lock = threading.Lock()
_statuses: dict[str, Counter[int]] = defaultdict(Counter)
_server_errors: list[str] = []
_last_dump = 0.0
_started = time.monotonic()
_last_progress = time.monotonic()
PROGRESS_EVERY_S = float(os.environ.get("ANYFACE_FUZZ_PROGRESS_S", "30"))


GALLERY = re.compile(GALLERY_PATTERN)
SUBJECT = re.compile(SUBJECT_PATTERN)


def _valid(name: str, value: Any) -> bool:
    """Whether a generated value is valid for its field: only those are swapped for seeded data or photos (a
    positive case may still hold values the schema allows and the API refuses, e.g. `None`)."""
    if name == "gallery":
        return isinstance(value, str) and GALLERY.fullmatch(value) is not None
    if name == "subject_id":
        return isinstance(value, str) and SUBJECT.fullmatch(value) is not None
    if name == "face_id":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "images":  # the schema's files are strings (contentMediaType), some generators give bytes
        return isinstance(value, list) and bool(value) and all(isinstance(v, str | bytes) for v in value)
    if name in FILE_FIELDS:
        return isinstance(value, str | bytes)
    return False


def _photos(name: str) -> Any:
    if name == "images":
        return st.lists(st.sampled_from(PHOTOS), min_size=1, max_size=3)
    return st.sampled_from(PHOTOS)


METADATA = st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=8), st.booleans(),
                                                          st.none()), max_size=3).map(json.dumps)


def _choice(name: str, value: Any) -> Any:
    """The generated value, or (about half the time, when it is valid) a seeded name, a real photo, a JSON
    object for `metadata` (a string field the API parses as JSON)."""
    if name == "metadata" and isinstance(value, str):
        return st.one_of(st.just(value), METADATA)
    if not _valid(name, value):
        return st.just(value)
    if name in FILE_FIELDS and PHOTOS:
        return st.one_of(st.just(value), _photos(name))
    pool = PHOTOS if name in FILE_FIELDS else {"gallery": GALLERIES, "subject_id": SUBJECTS,
                                                "face_id": FACE_IDS}.get(name, [])
    return st.one_of(st.just(value), st.sampled_from(pool)) if pool else st.just(value)


def _plain_form_property(schema: dict[str, Any]) -> dict[str, Any]:
    """A multipart property without its `null` alternative: a form field cannot be null (leaving it out is what
    None means), and an optional upload declared `anyOf: [file, null]` is then a file that Schemathesis sends as
    one (with a filename), not as a text field."""
    variants = schema.get("anyOf")
    if not isinstance(variants, list):
        return schema
    kept = [v for v in variants if not (isinstance(v, dict) and v.get("type") == "null")]
    if len(kept) != 1:
        return schema
    return {**{k: v for k, v in schema.items() if k != "anyOf"}, **kept[0]}


def _seeded_examples(name: str, schema: dict[str, Any]) -> None:
    pool = {"gallery": GALLERIES, "subject_id": SUBJECTS, "face_id": FACE_IDS}.get(name)
    if pool and "examples" not in schema and "example" not in schema:
        schema["examples"] = list(pool)


@schemathesis.hook
def before_load_schema(context: Any, raw_schema: dict[str, Any]) -> None:
    """Requests only (what the fuzzer generates; the responses are checked against the schema as served): plain
    multipart properties, and the seeded names as examples of the gallery / subject / face parameters and form
    fields, so that the examples phase runs on existing data."""
    components = raw_schema.get("components", {}).get("schemas", {})
    for item in raw_schema.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                if isinstance(parameter, dict) and isinstance(parameter.get("schema"), dict):
                    _seeded_examples(parameter.get("name", ""), parameter["schema"])
            content = operation.get("requestBody", {}).get("content", {})
            schema = content.get("multipart/form-data", {}).get("schema", {})
            ref = schema.get("$ref", "")
            body = components.get(ref.rsplit("/", 1)[-1]) if ref else schema
            if isinstance(body, dict) and isinstance(body.get("properties"), dict):
                body["properties"] = {name: _plain_form_property(prop) for name, prop in body["properties"].items()}
                for name, prop in body["properties"].items():
                    _seeded_examples(name, prop)


# The uploads each operation needs (the schema declares every upload optional, as the API checks the combination
# itself): a third of the generated bodies get one of these sets of photos.
FILE_GROUPS: dict[str, list[tuple[str, ...]]] = {
    "/v1/detect": [("image",)],
    "/v1/identify": [("image",)],
    "/v1/verify": [("image_a", "image_b"), ("image", "gallery", "subject_id")],
    "/v1/galleries/{gallery}/subjects/{subject_id}/faces": [("images",)],
}


def _with_photos(body: dict[str, Any], group: tuple[str, ...]) -> Any:
    """`body` with photos (and seeded names) in the fields of `group`, and without the other uploads."""
    parts: dict[str, Any] = {}
    for name, value in body.items():
        if name in FILE_FIELDS and name not in group and _valid(name, value):
            continue
        parts[name] = _choice(name, value)
    for name in group:
        if name in body and not _valid(name, body[name]):
            continue
        if name in FILE_FIELDS:
            parts[name] = _photos(name)
        elif name == "gallery" and GALLERIES:
            parts[name] = st.sampled_from(GALLERIES)
        elif name == "subject_id" and SUBJECTS:
            parts[name] = st.sampled_from(SUBJECTS)
    return st.fixed_dictionaries(parts)


def _body(context: Any, body: dict[str, Any]) -> Any:
    generated = st.fixed_dictionaries({name: _choice(name, value) for name, value in body.items()})
    path = getattr(getattr(context, "operation", None), "path", "")
    groups = FILE_GROUPS.get(path, []) if PHOTOS else []
    if not groups:
        return generated
    return st.one_of(generated, generated, *[_with_photos(body, group) for group in groups])


def _negative(case: Any) -> bool:
    meta = getattr(case, "meta", None)
    mode = getattr(getattr(meta, "generation", None), "mode", None)
    return bool(getattr(mode, "is_negative", True))


@schemathesis.hook
def flatmap_case(context: Any, case: Any) -> Any:
    """Steer positive cases (fuzzing and stateful phases) to the seeded data and real photos. Negative cases are left
    alone: they must stay invalid, or the API rightly accepts them and `negative_data_rejection` fails."""
    if _negative(case):
        return st.just(case)
    path = case.path_parameters or {}
    path_strategy = st.fixed_dictionaries({name: _choice(name, value) for name, value in path.items()})
    # Not in the stateful phase: it writes values from earlier responses into the body afterwards, Schemathesis then
    # re-validates the body, cannot validate binary parts and calls the (valid) request negative
    phase = getattr(getattr(getattr(case, "meta", None), "phase", None), "name", None)
    phase = getattr(phase, "value", phase)
    multipart = isinstance(case.body, dict) and "multipart" in str(case.media_type) and phase != "stateful"
    body_strategy = _body(context, case.body) if multipart else st.just(None)

    def apply(drawn: tuple[dict[str, Any], dict[str, Any] | None]) -> Any:
        new_path, new_body = drawn
        if new_path and new_path != path:
            case.path_parameters = new_path
        if new_body is not None and new_body != case.body:
            case.body = new_body
        # what the hook wrote is generated data, not an edit: without this Schemathesis re-validates the body,
        # cannot validate the photos (binary) and re-labels the valid case negative
        record = getattr(case, "_record_starting_state", None)
        if record is not None:
            record()
        return case

    return st.tuples(path_strategy, body_strategy).map(apply)


def _operation(case: Any) -> str:
    if case.method.upper() != case.operation.method.upper():  # the unsupported_method check's probes
        return "other methods on declared paths (expect 405)"
    return f"{case.method.upper()} {case.operation.path}"


def dump() -> None:
    if not STATS_PATH:
        return
    with _lock:
        data = {
            "statuses": {op: {str(k): v for k, v in sorted(c.items())} for op, c in sorted(_statuses.items())},
            "server_errors": _server_errors[:50],
        }
    tmp = Path(STATS_PATH + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(STATS_PATH)


atexit.register(dump)


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    global _last_dump
    status = int(response.status_code)
    with _lock:
        _statuses[_operation(case)][status] += 1
        if status >= 500 and len(_server_errors) < 50:
            _server_errors.append(f"{_operation(case)} -> {status}: {response.text[:300]}")
        now = time.monotonic()
        due = now - _last_dump > 2.0
        if due:
            _last_dump = now
        progress = _progress_line(now) if now - _last_progress > PROGRESS_EVERY_S else None
    if due:
        dump()
    if progress:
        print(progress, flush=True)


def _progress_line(now: float) -> str:
    """One line of progress (Schemathesis prints nothing while a phase runs when its output is not a terminal)."""
    global _last_progress
    _last_progress = now
    total: Counter[int] = Counter()
    for counts in _statuses.values():
        total.update(counts)
    sent = sum(total.values())
    spread = ", ".join(f"{s}: {n}" for s, n in sorted(total.items()))
    return (f"[fuzz] progress: {sent} requests in {now - _started:.0f} s ({sent / max(now - _started, 1e-9):.1f}/s) "
            f"in this round; {spread}; 5xx: {sum(n for s, n in total.items() if s >= 500)}")
