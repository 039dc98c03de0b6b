"""Pick the embedder resolution for a face from its size in source pixels (BTNet's resolution indicator)."""

from __future__ import annotations

import bisect
from typing import Literal

Rule = Literal["ceil", "floor", "nearest"]


def route(indicator: float, resolutions: list[int], rule: Rule = "ceil") -> int:
    """`resolutions` sorted ascending; the largest is the trunk and takes every face above it.

    ceil: the smallest resolution >= indicator; floor: the largest <= indicator (the smallest for tinier faces);
    nearest: the closest one, ties going up.
    """
    if not resolutions:
        raise ValueError("no resolutions to route to")
    if indicator >= resolutions[-1]:
        return resolutions[-1]
    i = bisect.bisect_left(resolutions, indicator)  # resolutions[i] >= indicator
    if rule == "ceil":
        return resolutions[i]
    if resolutions[i] == indicator:
        return resolutions[i]
    below = resolutions[i - 1] if i > 0 else resolutions[0]
    if rule == "floor":
        return below
    above = resolutions[i]
    return above if (above - indicator) <= (indicator - below) else below
