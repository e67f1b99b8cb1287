"""Split JSON lists and pages into their items by brackets alone, for values nested too deeply.

msgspec splits a list or a ``{"studies": [...]}`` page into its items without parsing them,
but it still descends into every item, and one item nested deeper than Python's recursion
limit (about 1,000 levels) makes it raise ``RecursionError`` for the whole value: one hostile
record would cost every other record of its file or page. When that happens the readers fall
back to this scanner, which only finds where each top-level item starts and ends (strings are
skipped whole, so brackets inside text do not count); each item then goes through the normal
per-record checks, so only the deep one is reported and skipped.

It is slower than msgspec (a Python loop over every string and bracket) and only ever runs on
a value msgspec could not split.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

#: A JSON string (escapes included; DOTALL so a stray raw line break cannot end it early)
#: or one structural character.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}:,]', re.DOTALL)
_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")
_COMMA, _COLON, _QUOTE = ord(","), ord(":"), ord('"')


def elements(data: bytes, opener: int) -> list[tuple[int, int, int]]:
    """``(start, colon, end)`` of every element directly inside the list or object that
    opens at ``data[opener]``.

    For an object, ``colon`` is the index of the ``:`` after the member's key (-1 for a
    list element). An unterminated container ends at the end of ``data`` (its last element
    then fails its own parse, and is reported there).
    """
    out: list[tuple[int, int, int]] = []
    depth = 0
    start = colon = -1
    for match in _TOKEN.finditer(data, opener):
        char = data[match.start()]
        if char == _QUOTE:
            continue
        if char in _OPEN:
            depth += 1
            if depth == 1:
                start = match.end()
        elif char in _CLOSE:
            depth -= 1
            if depth == 0:
                if data[start : match.start()].strip():
                    out.append((start, colon, match.start()))
                return out
        elif depth == 1:
            if char == _COMMA:
                out.append((start, colon, match.start()))
                start, colon = match.end(), -1
            elif char == _COLON and colon < 0:
                colon = match.start()
    if start >= 0 and data[start:].strip():
        out.append((start, colon, len(data)))
    return out


def _members(data: bytes, opener: int) -> dict[Any, tuple[int, int]]:
    """Key -> value span of the members of the object opening at ``data[opener]``."""
    found: dict[Any, tuple[int, int]] = {}
    for start, colon, end in elements(data, opener):
        if colon < 0:
            continue
        try:
            key = msgspec.json.decode(data[start:colon])
        except (msgspec.DecodeError, RecursionError):
            continue
        if isinstance(key, str):
            found[key] = (colon + 1, end)
    return found


def _first_char(data: bytes, start: int, end: int) -> int:
    """Index of the first non-blank byte in ``data[start:end]`` (``end`` if none)."""
    length = len(data[start:end]) - len(data[start:end].lstrip())
    return start + length


def split_nested(data: bytes) -> tuple[str, list[bytes] | None]:
    """A list (``"item"``, its items) or an object (``"studies"``, the items of its
    ``studies`` list, or ``None`` when it has none: then it is one record)."""
    opener = _first_char(data, 0, len(data))
    if data[opener : opener + 1] == b"[":
        return "item", [data[s:e].strip() for s, _, e in elements(data, opener)]
    studies = _members(data, opener).get("studies")
    if studies is None:
        return "studies", None
    first = _first_char(data, *studies)
    if data[first : first + 1] != b"[":
        return "studies", None
    return "studies", [data[s:e].strip() for s, _, e in elements(data, first)]


def page_from_nested(data: bytes) -> dict[str, Any]:
    """An API v2 page whose studies msgspec could not split: ``studies`` as the bytes of
    each item, and every other member (``nextPageToken``, ``totalCount``) decoded; a member
    that is itself too deep is left out."""
    opener = _first_char(data, 0, len(data))
    if data[opener : opener + 1] != b"{":
        return {}
    page: dict[str, Any] = {}
    for key, (start, end) in _members(data, opener).items():
        if key == "studies":
            first = _first_char(data, start, end)
            if data[first : first + 1] == b"[":
                page[key] = [data[s:e].strip() for s, _, e in elements(data, first)]
            continue
        try:
            page[key] = msgspec.json.decode(data[start:end])
        except (msgspec.DecodeError, RecursionError):
            continue
    return page
