"""JSON encoding of responses, with one encoder built once.

msgspec encodes nested values recursively and stops at the interpreter's recursion limit, which a
1000-deep span tree (a Struct and a list per level) exceeds. :func:`encode_visualization` therefore
writes the tree iteratively: msgspec encodes each node without its children, and the children are spliced
in from an explicit stack, so any depth works in O(n).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from .shapes import Visualization, VisualNode

_encoder: Final = msgspec.json.Encoder()

_EMPTY_CHILDREN: Final = b"[]}"
_EMPTY_TAIL: Final = b'"tree":null,"orphans":[]}'


def encode(value: Any) -> bytes:
    """Encode a response value (Structs, lists, dicts) as JSON."""
    return _encoder.encode(value)


def _encode_tree(root: VisualNode, out: bytearray) -> None:
    stack: list[VisualNode | bytes] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out += item
            continue
        head = _encoder.encode(msgspec.structs.replace(item, children=[]))
        if not head.endswith(_EMPTY_CHILDREN):  # ``children`` must be the last field of VisualNode
            raise RuntimeError("VisualNode.children is not the last encoded field")
        out += head[: -len(_EMPTY_CHILDREN) + 1]  # keep the opening "["
        stack.append(b"]}")
        children = item.children
        for i in range(len(children) - 1, -1, -1):
            stack.append(children[i])
            if i:
                stack.append(b",")


def encode_visualization(visualization: Visualization) -> bytes:
    """The visualization as JSON, whatever the depth of its trees."""
    head = _encoder.encode(msgspec.structs.replace(visualization, tree=None, orphans=[]))
    if not head.endswith(_EMPTY_TAIL):  # ``tree`` and ``orphans`` must be the last fields
        raise RuntimeError("Visualization.tree/orphans are not the last encoded fields")
    out = bytearray(head[: -len(_EMPTY_TAIL)])
    out += b'"tree":'
    if visualization.tree is None:
        out += b"null"
    else:
        _encode_tree(visualization.tree, out)
    out += b',"orphans":['
    for i, orphan in enumerate(visualization.orphans):
        if i:
            out += b","
        _encode_tree(orphan, out)
    out += b"]}"
    return bytes(out)
