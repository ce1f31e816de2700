"""JSON from devices, decoded with a bound on nesting: deep nesting is bad input, not a RecursionError.

msgspec (like the standard library) decodes nested arrays and objects recursively and raises RecursionError
near the interpreter's recursion limit (about 1,000 levels; 60 KB of ``[`` is 60,000). That is a decode error of
the input like any other, and it must read as one: "not valid JSON: nested too deep", no traceback, the message
kept as a dead letter. A document just under the limit decodes, but anything that walks it later (encoding the
event, converting a mapped field) could then hit the limit on a deeper stack, so documents deeper than
``MAX_DEPTH`` are refused too. No device payload this agent reads nests more than a handful of levels.
"""

from __future__ import annotations

from typing import Any

import msgspec

#: Deeper than this is refused. The deepest payload the adapters read is about 4 levels (steps → step → value).
MAX_DEPTH = 64


class NestedTooDeep(ValueError):
    """The document nests deeper than ``MAX_DEPTH`` (or than the decoder can recurse)."""

    def __init__(self, max_depth: int = MAX_DEPTH) -> None:
        super().__init__(f"not valid JSON: nested too deep (more than {max_depth} levels)")


def decode(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """``msgspec.json.decode`` with a nesting bound. Raises ``msgspec.DecodeError`` for what is not JSON and
    ``NestedTooDeep`` for what nests too deep."""
    try:
        doc = msgspec.json.decode(data)
    except RecursionError:
        raise NestedTooDeep(max_depth) from None
    check(doc, data, max_depth)
    return doc


def check(doc: Any, data: bytes | str, max_depth: int = MAX_DEPTH) -> None:
    """Raise ``NestedTooDeep`` if ``doc`` (decoded from ``data``) nests deeper than ``max_depth``. The depth
    cannot exceed the number of ``[`` and ``{`` in the text, so an ordinary payload costs two byte counts; only a
    document with more brackets than the bound is walked (iteratively: the walk itself must not recurse)."""
    if isinstance(data, str):
        brackets = data.count("[") + data.count("{")
    else:
        brackets = data.count(b"[") + data.count(b"{")
    if brackets <= max_depth:
        return
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > max_depth:
            raise NestedTooDeep(max_depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
