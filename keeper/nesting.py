"""Parsing untrusted text whose nesting depth only the recursion limit bounds.

json's C parser and tomllib recurse once or more per nesting level, bounded only by the
recursion limit, and py_ecc (imported with eth-account) raises that limit to 100,000: a text
of 100,000 "[" then overflows the C stack (a segfault) instead of raising RecursionError.
"""

from __future__ import annotations

import sys
from typing import Callable, Sized, TypeVar

_T = TypeVar("_T", bound=Sized)
_R = TypeVar("_R")


def parse_bounded(parse: Callable[[_T], _R], text: _T, limit: int, frames_per_char: int = 1) -> _R:
    """parse(text), with the recursion limit lowered to `limit` while it runs if the text is
    long enough to nest deeper (len(text) * frames_per_char > limit): a RecursionError
    instead of a crash. Short texts (the common case) cost one length test."""
    if len(text) * frames_per_char <= limit:
        return parse(text)
    old = sys.getrecursionlimit()
    if old <= limit:
        return parse(text)
    sys.setrecursionlimit(limit)
    try:
        return parse(text)
    finally:
        sys.setrecursionlimit(old)
