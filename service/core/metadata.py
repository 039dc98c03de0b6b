"""What a subject's name and metadata may be: one rule for enrolment and PATCH, checked before anything is written,
and the same rule applied when a stored subject is shown, so that a response can always be built from it.

Metadata is a JSON object of at most `max_metadata_depth` nested objects and arrays (the object itself is level 1)
and at most `max_metadata_bytes` bytes as compact JSON (UTF-8, no spaces, non-ASCII not escaped: what
`json.dumps(value, ensure_ascii=False, separators=(",", ":"))` writes; keys count too). Its numbers are finite
(JSON has no NaN or infinity) and its strings are Unicode text (no lone surrogates, which no UTF-8 response can
carry). A name is a string of at most `max_name_chars` characters, also without lone surrogates.

The check walks the value without recursion and stops as soon as a limit is passed, so its cost is bounded by the
limits, not by what a caller sent.

A subject stored before these rules (or under larger limits, or by hand) is shown with empty metadata that says
why (`UnreadableMetadata`), and a name with its lone surrogates replaced by U+FFFD; PATCH replaces either.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any

from service.errors import InvalidMetadata, InvalidParameter
from service.gallery.store import Subject
from service.settings import Settings

_KEY_IN_PATH = 32  # characters of a key quoted in an error message


@dataclass(frozen=True)
class SubjectLimits:
    max_name_chars: int = 256
    max_metadata_bytes: int = 16_384
    max_metadata_depth: int = 16

    @classmethod
    def of(cls, settings: Settings) -> SubjectLimits:
        return cls(settings.max_name_chars, settings.max_metadata_bytes, settings.max_metadata_depth)


class UnreadableMetadata(dict[str, Any]):
    """Empty metadata standing in for stored metadata that cannot be shown; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


def _string_problem(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "not Unicode text (a lone surrogate)"
    return None


def _string_size(text: str) -> int:
    """Bytes of `text` as a compact JSON string (quotes and escapes included); `text` has no lone surrogates."""
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8"))


def _scalar_size(value: object) -> int | str:
    """Bytes of a JSON scalar, or what is wrong with it."""
    if value is None or value is True:
        return 4
    if value is False:
        return 5
    if isinstance(value, int):
        try:
            return len(int.__repr__(value))
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            return "an integer with too many digits"
    if isinstance(value, float):
        if not math.isfinite(value):
            return f"{value} is not a JSON number (numbers must be finite)"
        return len(float.__repr__(value))
    if isinstance(value, str):
        return _string_problem(value) or _string_size(value)
    return f"a {type(value).__name__} is not a JSON value"


def metadata_problem(value: object, limits: SubjectLimits) -> str | None:
    """What breaks the metadata rule in `value`, or None when it follows it."""
    if not isinstance(value, dict):
        return "must be a JSON object"
    cap, max_depth = limits.max_metadata_bytes, limits.max_metadata_depth
    too_large = f"more than {cap} bytes as compact JSON"
    size = 0
    stack: list[tuple[object, int, str]] = [(value, 1, "metadata")]
    while stack:
        node, depth, where = stack.pop()
        if isinstance(node, dict | list):
            if depth > max_depth:
                return f"{where}: nested deeper than {max_depth} levels of objects and arrays"
            size += 2 + max(len(node) - 1, 0)  # brackets and commas
            if size > cap:
                return too_large
            if isinstance(node, list):
                stack.extend((item, depth + 1, f"{where}[{i}]") for i, item in enumerate(node))
                continue
            for key, item in node.items():
                if not isinstance(key, str):
                    return f"{where}: the key {key!r} is not a string"
                if len(key) > cap:
                    return too_large
                problem = _string_problem(key)
                if problem is not None:
                    return f"{where}: a key is {problem}"
                size += _string_size(key) + 1  # and the colon
                if size > cap:
                    return too_large
                stack.append((item, depth + 1, f"{where}.{key[:_KEY_IN_PATH]}"))
            continue
        if isinstance(node, str) and len(node) > cap:
            return too_large
        scalar = _scalar_size(node)
        if isinstance(scalar, str):
            return f"{where}: {scalar}"
        size += scalar
        if size > cap:
            return too_large
    return None


def check_metadata(value: object, limits: SubjectLimits) -> dict[str, Any] | None:
    """`value` when it follows the metadata rule (None: leave the stored metadata as it is); else `InvalidMetadata`."""
    if value is None:
        return None
    problem = metadata_problem(value, limits)
    if problem is not None:
        raise InvalidMetadata(problem if problem.startswith("metadata") else f"metadata: {problem}")
    return value  # type: ignore[return-value]


def check_name(value: object, limits: SubjectLimits) -> str | None:
    """`value` when it is a valid name (None: leave the stored name as it is); else `InvalidParameter`."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidParameter("name: must be a string")
    if len(value) > limits.max_name_chars:
        raise InvalidParameter(f"name: at most {limits.max_name_chars} characters")
    problem = _string_problem(value)
    if problem is not None:
        raise InvalidParameter(f"name: {problem}")
    return value


def shown_name(name: str | None) -> str | None:
    """A stored name as a response can carry it: lone surrogates replaced by U+FFFD."""
    if name is None or _string_problem(name) is None:
        return name
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in name)


def presentable(subject: Subject, limits: SubjectLimits) -> Subject:
    """The stored subject as a response can always show it: metadata that breaks the rule is replaced by an empty
    `UnreadableMetadata` saying why, a name by `shown_name`. The subject itself when nothing needs replacing."""
    problem = metadata_problem(subject.metadata, limits)
    name = shown_name(subject.name)
    if problem is None and name is subject.name:
        return subject
    metadata = subject.metadata if problem is None else UnreadableMetadata(
        f"the stored metadata cannot be shown: {problem}; replace it with PATCH")
    return replace(subject, name=name, metadata=metadata)
