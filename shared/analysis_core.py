"""The trace analysis' per-span work: one plain object per span, integer microseconds, no per-span calls.

:mod:`shared.analysis` is the public face: it defines the result Structs and calls :func:`analyze` with
their constructors. The definitions are those of its module docstring; this module only chooses how to
compute them:

* Each span's fields are read once, into a :class:`Node` (positions follow the first occurrence of each
  span id; the last duplicate's fields win). Children are lists of nodes; nothing points upwards except
  an integer position, so the structure holds no reference cycles.
* Children are sorted by (start, span id) only where they are not already in that order; the cycle
  search runs only when some span's parent comes after it in the input (producers emit parents first).
* Self times are computed while the sanitized tree is built; the critical-path walk scans each span's
  children once (their ends strictly decrease along the walk). O(n log n) in all, and iterative.
* Milliseconds are computed once per output value, with Python's int / int semantics (:func:`_ms`), and
  the results are built directly as the result Structs.

This module is compiled with mypyc when the project is installed with a C compiler (``setup.py``), where
``int`` attributes of these classes are stored unboxed (lists would box every int they hold, hence one
object per span rather than parallel lists). The build carries the sha256 of the source it was built from,
and :mod:`shared.compiled` ignores it when this file has changed since. So this must stay plain, typed
Python needing nothing outside the standard library (the build type-checks it alone), and behave the same
interpreted or compiled.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

SOURCE_SHA256: Final = ""
"""Empty in the source; the build stamps the sha256 of this file's bytes into the copy it compiles."""

_INTERPRETED: Final = __file__.endswith(".py")
"""Whether this runs from source: then the C builtins (``round``, ``bisect``) beat the native loops that the
compiled build is faster with (a call to a builtin costs a compiled module more than the loop itself)."""
_EXACT: Final = 1 << 53
"""Below this magnitude an int converts to a float exactly, so a float division is Python's int division."""
_ROUND2_FAST_BELOW: Final = 1125899906842624.0
"""2**50: below it every integer and half-integer is a float (see :func:`_round2`)."""
_INSERTION_SORT_MAX: Final = 16
"""Child lists up to this length are sorted in place by insertion (no key objects); longer ones by key."""
SKETCH_ALPHA: Final = 0.01
"""The relative accuracy of the latency sketch (``shared.store.sketch``)."""
SKETCH_GAMMA: Final = (1 + SKETCH_ALPHA) / (1 - SKETCH_ALPHA)
_LOG_GAMMA: Final = math.log(SKETCH_GAMMA)
SKETCH_STRIDE: Final = 4096
"""A histogram key is ``(fixed bucket + 1) * SKETCH_STRIDE + sketch bin``; bins stay below it (int64 µs:
bin 2186 at most)."""


class SpanLayout:
    """How the analysis reads a span's fields: all at once, ``fields(span)`` returning them as a tuple
    (``msgspec.structs.astuple`` for a Struct: one call instead of a generic attribute lookup per field),
    and where each field it needs sits in that tuple, given the field ``names`` in order.

    The fields: ``span_id`` (str), ``parent_span_id`` (str or None), ``service_name``, ``operation_name``
    (str), ``start_time_us`` (int), ``duration_us`` (int or None), ``status`` (str, "error" for a failed
    span), ``kind`` (str or None); for :func:`span_shares` also ``tags`` and ``resource`` (str -> str, int,
    float or bool), ``scope_name`` and ``scope_version`` (str or None), ``logs`` (objects with ``fields``).
    """

    def __init__(self, fields: Callable[[Any], tuple[Any, ...]], names: Sequence[str]) -> None:
        at = {name: index for index, name in enumerate(names)}
        self.fields = fields
        self.span_id: int = at["span_id"]
        self.parent_span_id: int = at["parent_span_id"]
        self.service_name: int = at["service_name"]
        self.operation_name: int = at["operation_name"]
        self.start_time_us: int = at["start_time_us"]
        self.duration_us: int = at["duration_us"]
        self.status: int = at["status"]
        self.kind: int = at["kind"]
        self.tags: int = at["tags"]
        self.logs: int = at["logs"]
        self.resource: int = at["resource"]
        self.scope_name: int = at["scope_name"]
        self.scope_version: int = at["scope_version"]


def _ms(us: int) -> float:
    """Microseconds to milliseconds, exactly as Python's ``us / 1000`` (correctly rounded)."""
    if -_EXACT < us < _EXACT:
        return us / 1000
    return cast(float, cast(Any, us) / 1000)  # compiled int division would round to a float first


def _ratio(a: int, b: int) -> float:
    """``a / b`` exactly as Python computes it for ints."""
    if -_EXACT < a < _EXACT and -_EXACT < b < _EXACT:
        return a / b
    return cast(float, cast(Any, a) / b)


class Node:
    """One distinct span of the trace, as the analysis sees it.

    ``end`` = start + duration, an open (``is_open``) or negative duration counting as zero. ``parent`` is
    the parent's position, -1 for a root (parentless, orphan, or the cut member of a cycle). The sanitized
    fields (window, kept synchronous children in start order, self time) are meaningful only for spans of
    a sanitized tree (see :class:`Timing`).
    """

    def __init__(self, span: object, row: tuple[Any, ...], at: SpanLayout, position: int, service: Service) -> None:
        self.span = span
        self.position = position
        self.span_id: str = row[at.span_id]
        self.parent_id: str | None = row[at.parent_span_id]
        self.service: Service = service
        self.operation: str = row[at.operation_name]
        start: int = row[at.start_time_us]
        duration: int | None = row[at.duration_us]
        self.start: int = start
        self.is_open: bool = duration is None
        self.end: int = start + duration if duration is not None and duration > 0 else start
        self.error: bool = row[at.status] == "error"
        kind: str | None = row[at.kind]
        self.producer: bool = kind == "producer"
        self.consumer: bool = kind == "consumer"
        self.parent: int = -1
        self.children: list[Node] = _NO_NODES  # replaced by a list of its own at the first child
        self.window_start: int = 0
        self.window_end: int = 0
        self.self_us: int = 0
        self.kept: list[Node] = _NO_NODES  # likewise
        self.kept_position: int = 0  # among its parent's kept children: the critical path's tie-break
        self.by_end: list[Node] = _NO_NODES  # the critical path's candidates, and how many are left
        self.candidates_left: int = 0
        self.cached_label: str = ""

    @property
    def label(self) -> str:
        """``service:operation`` (made once, when first asked for)."""
        if not self.cached_label:
            self.cached_label = f"{self.service.name}:{self.operation}"
        return self.cached_label


_NO_NODES: Final[list[Node]] = []
"""The shared empty child list: never appended to (a node gets its own list at its first child)."""


class Service:
    """A service of the trace: its operations and its spans' summed self time (µs)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.operations: set[str] = set()
        self.self_us: int = 0
        self.number: int = 0  # its place in name order, once every service is known


def _add_child(parent: Node, child: Node) -> None:
    if parent.children:
        parent.children.append(child)
    else:
        parent.children = [child]


def _before(a: Node, b: Node) -> bool:
    """Whether ``a`` sorts before ``b`` by (start, span id)."""
    return a.start < b.start or (a.start == b.start and a.span_id < b.span_id)


def _start_key(node: Node) -> tuple[int, str]:
    return node.start, node.span_id


def _sort_by_start(nodes: list[Node]) -> None:
    """Sort in place by (start, span id); nothing to do in the common case that they already are."""
    for i in range(1, len(nodes)):
        if _before(nodes[i], nodes[i - 1]):
            break
    else:
        return
    if len(nodes) > _INSERTION_SORT_MAX:
        nodes.sort(key=_start_key)
        return
    for i in range(1, len(nodes)):
        node = nodes[i]
        j = i - 1
        while j >= 0 and _before(node, nodes[j]):
            nodes[j + 1] = nodes[j]
            j -= 1
        nodes[j + 1] = node


class Forest:
    """The spans of one trace as a forest: deduplicated, cycles broken, children sorted by (start, id).

    ``nodes`` by position; ``roots``: the main root first (the parentless span with the earliest start, a
    finished one before an open one, then by id), then the other roots by (start, id); ``main_root`` is
    None when no span is parentless. ``async_roots``: the CONSUMER children of PRODUCER spans, by position.
    ``services`` by name. ``orphan_count`` counts orphans and every member of a cycle;
    ``complete``: some parentless span is finished.
    """

    def __init__(self, spans: Sequence[object], layout: SpanLayout) -> None:
        by_id: dict[str, Node] = {}
        services: dict[str, Service] = {}
        nodes: list[Node] = []
        fields = layout.fields
        for span in spans:
            row = fields(span)
            name: str = row[layout.service_name]
            service = services.get(name)
            if service is None:
                service = services[name] = Service(name)
            node = Node(span, row, layout, len(nodes), service)
            first = by_id.setdefault(node.span_id, node)
            if first is node:
                nodes.append(node)
            else:  # a duplicate: the last one wins, at the place of the first
                node.position = first.position
                nodes[first.position] = node
                by_id[node.span_id] = node
        self.nodes: list[Node] = nodes
        self.services: list[Service] = [services[name] for name in sorted(services)]

        parentless: list[Node] = []
        orphans: list[Node] = []
        async_roots: list[Node] = []
        parent_first = True
        open_count = 0
        complete = False
        for node in nodes:
            node.service.operations.add(node.operation)
            if node.is_open:
                open_count += 1
            parent_id = node.parent_id
            if parent_id is None:
                parentless.append(node)
                if not node.is_open:
                    complete = True
                continue
            parent = by_id.get(parent_id)
            if parent is None or parent is node:
                orphans.append(node)
                continue
            node.parent = parent.position
            _add_child(parent, node)
            if parent.producer and node.consumer:
                async_roots.append(node)
            if parent.position > node.position:
                parent_first = False
        self.open_count: int = open_count
        self.complete: bool = complete
        cut: list[Node] = []
        cycle_members = 0
        if not parent_first:
            cycle_members = _cut_cycles(nodes, cut)
        for node in nodes:
            if len(node.children) > 1:
                _sort_by_start(node.children)

        main_root: Node | None = None
        for node in parentless:  # the least by (start, open, id)
            if main_root is None or node.start < main_root.start:
                main_root = node
            elif node.start == main_root.start:
                if node.is_open == main_root.is_open:
                    if node.span_id < main_root.span_id:
                        main_root = node
                elif not node.is_open:
                    main_root = node
        self.main_root: Node | None = main_root
        extra = [node for node in parentless if node is not main_root] + orphans + cut
        _sort_by_start(extra)
        self.roots: list[Node] = [main_root, *extra] if main_root is not None else extra
        self.orphan_count: int = len(orphans) + cycle_members
        self.async_roots: list[Node] = [node for node in async_roots if node.parent >= 0]  # not cut


def _cut_cycles(nodes: list[Node], cut: list[Node]) -> int:
    """Break every cycle of parent links: its earliest member (by start, id) becomes a root.

    Appends the cut members to ``cut`` and returns how many spans the cycles held in all. Every span has
    at most one parent, so walking up from any span ends at a root or in a cycle; each walk stops at spans
    settled by an earlier one, so this is O(n).
    """
    state = [0] * len(nodes)  # 0: not seen, 1: on the current walk, 2: settled
    members = 0
    for first in range(len(nodes)):
        if state[first]:
            continue
        path: list[int] = []
        current = first
        while current >= 0 and state[current] == 0:
            state[current] = 1
            path.append(current)
            current = nodes[current].parent
        if current >= 0 and state[current] == 1:  # the walk closed a cycle at `current`
            cycle = path[path.index(current) :]
            members += len(cycle)
            best = nodes[cycle[0]]
            for member in cycle:
                if _before(nodes[member], best):
                    best = nodes[member]
            cut.append(best)
        for settled in path:
            state[settled] = 2
    for node in cut:
        siblings = nodes[node.parent].children
        siblings.remove(node)
        node.parent = -1
    return members


class Timing:
    """The sanitized forest of a :class:`Forest` for the trace window ``[trace_start, trace_end]`` (µs).

    Fills every sanitized span's window, kept children and self time, and lists the spans of the main tree
    (``main``), of the extra roots' trees (``side``, clipped to the trace window when there is a main root)
    and of the async subtrees (``async_spans``: a CONSUMER child of a PRODUCER span roots one, in its own
    window, wherever its producer is), each in depth-first order; a span dropped with a subtree outside
    its parent's window is in none.
    """

    def __init__(self, forest: Forest, trace_start: int, trace_end: int) -> None:
        self.main: list[Node] = []
        self.side: list[Node] = []
        self.async_spans: list[Node] = []
        main_root = forest.main_root
        if main_root is not None:
            _sanitize(main_root, main_root.start, main_root.end, self.main)
        for root in forest.roots:
            if root is main_root:
                continue
            start, end = root.start, root.end
            if main_root is None:
                _sanitize(root, start, end, self.side)
            elif start == end:
                if trace_start <= start < trace_end:
                    _sanitize(root, start, start, self.side)
            else:
                start, end = max(start, trace_start), min(end, trace_end)
                if start < end:
                    _sanitize(root, start, end, self.side)
        for node in forest.async_roots:  # wherever its producer is, even if the producer was dropped
            _sanitize(node, node.start, node.end, self.async_spans)


def _sanitize(root: Node, root_start: int, root_end: int, out: list[Node]) -> None:
    """Clip the subtree of ``root`` (window given) into ``out``, depth first, computing self times.

    A child is clipped to its parent's clipped window, as Jaeger's ``sanitizeOverFlowingChildren`` does:
    one starting at or after the window's end, or ending at or before its start, is dropped with its
    subtree; a zero-length child is kept when ``window start <= its start < window end``.
    """
    root.window_start = root_start
    root.window_end = root_end
    stack = [root]
    while stack:
        node = stack.pop()
        out.append(node)
        start = node.window_start
        end = node.window_end
        busy = 0  # the union of the kept children's windows, swept in start order
        run_start = run_end = start
        children = node.children
        kept = children  # the common case: every child kept, and no list to build
        producer = node.producer
        for position in range(len(children)):
            kid = children[position]
            kid_start = kid.start
            kid_end = kid.end
            if producer and kid.consumer:  # async work: the root of a subtree of its own
                dropped = True
            elif kid_start == kid_end:
                dropped = kid_start < start or kid_start >= end
            else:
                if kid_start < start:
                    kid_start = start
                if kid_end > end:
                    kid_end = end
                dropped = kid_start >= kid_end
            if dropped:
                if kept is children:
                    kept = children[:position]
                continue
            kid.window_start = kid_start
            kid.window_end = kid_end
            if kept is children:
                kid.kept_position = position
            else:
                kid.kept_position = len(kept)
                kept.append(kid)
            if kid_start > run_end:  # clipped starts keep the start order
                busy += run_end - run_start
                run_start = kid_start
                run_end = kid_end
            elif kid_end > run_end:
                run_end = kid_end
        node.self_us = end - start - (busy + run_end - run_start)
        node.kept = kept if kept else _NO_NODES
        if kept:
            stack.extend(kept)


def _ends_before(a: Node, b: Node) -> bool:
    """The critical path's candidate order: by end; among equal ends the earliest in start order last."""
    return a.window_end < b.window_end or (a.window_end == b.window_end and a.kept_position > b.kept_position)


def _end_key(node: Node) -> tuple[int, int]:
    return node.window_end, -node.kept_position


def _by_end(kids: list[Node]) -> list[Node]:
    """The kept children in candidate order (see :func:`_ends_before`); the list itself when it is."""
    for i in range(1, len(kids)):
        if not _ends_before(kids[i - 1], kids[i]):
            break
    else:
        return kids
    ordered = list(kids)
    if len(ordered) > _INSERTION_SORT_MAX:
        ordered.sort(key=_end_key)
        return ordered
    for i in range(1, len(ordered)):
        node = ordered[i]
        j = i - 1
        while j >= 0 and _ends_before(node, ordered[j]):
            ordered[j + 1] = ordered[j]
            j -= 1
        ordered[j + 1] = node
    return ordered


def critical_path(root: Node) -> list[tuple[Node, int, int]]:
    """The Jaeger UI critical path of the sanitized tree of ``root``: (span, start, end) in time order (µs).

    Walks backwards from the root's end: a span hands the path to its last-finishing child (owning the
    section from that child's end to the cursor); back from a child, the next candidate is the child that
    ended strictly before the returning child's start; with no candidate left, the span owns the section
    from its own start to the cursor and the walk returns to its parent. Zero-length sections are skipped
    and adjacent sections of one span merged. Candidate end times strictly decrease within a span, so each
    span is entered at most once and its children are scanned once.
    """
    backwards: list[tuple[Node, int, int]] = []
    owner = root  # the section being merged: sections come latest first, so it grows towards the past
    owned_start = owned_end = root.window_end
    root.by_end = _by_end(root.kept)
    root.candidates_left = len(root.kept)
    stack = [root]
    cursor = root.window_end
    returning_start = 0
    returning = False
    while stack:
        node = stack[-1]
        by_end = node.by_end
        index = node.candidates_left - 1
        if returning:
            while index >= 0 and by_end[index].window_end >= returning_start:
                index -= 1
        if index >= 0:
            kid = by_end[index]
            node.candidates_left = index
            section_start = kid.window_end
            kid.by_end = _by_end(kid.kept)
            kid.candidates_left = len(kid.kept)
            stack.append(kid)
            returning = False
        else:
            section_start = node.window_start
            stack.pop()
            returning_start = section_start
            returning = True
        if section_start < cursor:  # the section [section_start, cursor] belongs to `node`
            if node is owner and cursor == owned_start:
                owned_start = section_start
            else:
                if owned_start < owned_end:
                    backwards.append((owner, owned_start, owned_end))
                owner, owned_start, owned_end = node, section_start, cursor
        cursor = section_start
    if owned_start < owned_end:
        backwards.append((owner, owned_start, owned_end))
    backwards.reverse()
    return backwards


def _round2(x: float) -> float:
    """``round(x, 2)``, bit for bit, mostly without its decimal string round trip (5x the cost of this).

    ``round`` returns the float nearest to ``q / 100``, ``q`` being the exact binary value of ``x`` times
    100 rounded half-even to an integer. ``y = x * 100`` is that product rounded to a float, and rounding is
    monotonic while integers and half-integers below 2**52 are floats: so when y's fraction is below (above)
    one half, so is the exact product's, and ``q`` is y rounded down (up); ``q / 100`` is then the nearest
    float to the decimal (an int division, correctly rounded). A y of exactly one half more than an
    integer, zeros (their sign is kept), negative, huge or non-finite values take ``round`` itself.
    """
    y = x * 100.0
    if 0.0 < y < _ROUND2_FAST_BELOW:
        whole = int(y)
        fraction = y - whole  # exact
        if fraction < 0.5:
            return _ratio(whole, 100)
        if fraction > 0.5:
            return _ratio(whole + 1, 100)
    return round(x, 2)


class ResultTypes:
    """The constructors of the result Structs of :mod:`shared.analysis`, called with keyword arguments.

    Passed in rather than imported, so that this module needs nothing outside the standard library.
    """

    def __init__(
        self,
        analysis: Callable[..., Any],
        bottleneck: Callable[..., Any],
        segment: Callable[..., Any],
        dependency: Callable[..., Any],
    ) -> None:
        self.analysis = analysis
        self.bottleneck = bottleneck
        self.segment = segment
        self.dependency = dependency


def analyze(trace_id: str, spans: Sequence[object], layout: SpanLayout, share_percent: int, types: ResultTypes) -> Any:
    """The analysis of one trace, built with ``types`` (``shared.analysis.analyze`` documents the result).

    The trace window: the main root's, else min start to max end; an open main root starts the window,
    which then lasts max end - min start. Bottlenecks: main and side tree spans whose self time is more
    than ``share_percent`` of the duration, by self time descending, then (start, id).
    """
    forest = Forest(spans, layout)
    nodes = forest.nodes
    root = forest.main_root
    if not nodes:
        start_us = duration_us = 0
    elif root is None:
        start_us = min([node.start for node in nodes])
        duration_us = max([node.end for node in nodes]) - start_us
    elif root.is_open:
        start_us = root.start
        duration_us = max([node.end for node in nodes]) - min([node.start for node in nodes])
    else:
        start_us = root.start
        duration_us = root.end - start_us
    timing = Timing(forest, start_us, start_us + duration_us)

    error_count = 0
    for node in nodes:
        if node.error:
            error_count += 1
    services = forest.services  # by name
    operations: list[tuple[str, str]] = []
    for number, service in enumerate(services):
        service.number = number
        for operation in service.operations:
            operations.append((service.name, operation))
    operations.sort()

    for span_list in (timing.main, timing.side, timing.async_spans):
        for node in span_list:
            node.service.self_us += node.self_us
    ranked = sorted([(-service.self_us, service.name) for service in services])
    breakdown = {name: _ms(-negative) for negative, name in ranked}

    bottlenecks: list[Any] = []
    if duration_us > 0:
        limit = duration_us * share_percent
        candidates = [
            (-node.self_us, node.start, node.span_id, node.position)
            for span_list in (timing.main, timing.side)
            for node in span_list
            if node.self_us * 100 > limit
        ]
        candidates.sort()
        for _, _, _, position in candidates:
            node = nodes[position]
            bottlenecks.append(
                types.bottleneck(
                    span=node.label,
                    span_id=node.span_id,
                    duration=_ms(node.window_end - node.window_start),
                    self_time=_ms(node.self_us),
                    percentage=_round2(_ratio(node.self_us, duration_us) * 100),
                )
            )

    segments: list[Any] = []
    path: list[str] = []
    total = 0
    if root is not None:
        for node, start, end in critical_path(root):
            label = node.label
            segments.append(
                types.segment(span_id=node.span_id, span=label, start=_ms(start - start_us), end=_ms(end - start_us))
            )
            if not path or path[-1] != label:
                path.append(label)
            total += end - start

    count = len(services)
    calls: dict[int, int] = {}
    errors: dict[int, int] = {}
    for node in nodes:
        if node.parent < 0:
            continue
        parent_number = nodes[node.parent].service.number
        child_number = node.service.number
        if parent_number == child_number:
            continue  # calls inside one service are not dependencies between services
        edge = parent_number * count + child_number  # sorts as (parent name, child name) would
        calls[edge] = calls.get(edge, 0) + 1
        if node.error:
            errors[edge] = errors.get(edge, 0) + 1
    dependencies = [
        types.dependency(
            parent=services[edge // count].name,
            child=services[edge % count].name,
            calls=calls[edge],
            errors=errors.get(edge, 0),
        )
        for edge in sorted(calls)
    ]

    return types.analysis(
        trace_id=trace_id,
        root_span_id=root.span_id if root is not None else None,
        root_service=root.service.name if root is not None else None,
        root_operation=root.operation if root is not None else None,
        start_us=start_us,
        duration_us=duration_us,
        span_count=len(nodes),
        error_count=error_count,
        failed=error_count > 0,
        complete=forest.complete,
        orphan_spans=forest.orphan_count,
        open_spans=forest.open_count,
        services=[service.name for service in services],
        operations=operations,
        bottlenecks=bottlenecks,
        service_breakdown=breakdown,
        critical_path=path,
        critical_path_segments=segments,
        critical_path_duration=_ms(total),
        dependencies=dependencies,
    )


def _round(x: float) -> int:
    """``round(x)``: the nearest int, halves to even (as CPython), without the generic builtin call.

    Below 2**53 the truncated int and the fraction are exact; larger floats are integers already. NaN
    and infinities raise what ``round`` raises (ValueError, OverflowError).
    """
    if _INTERPRETED:
        return round(x)
    if -_EXACT < x < _EXACT:
        whole = int(x)  # toward zero
        fraction = x - whole
        if fraction > 0.5 or (fraction == 0.5 and whole % 2 == 1):
            return whole + 1
        if fraction < -0.5 or (fraction == -0.5 and whole % 2 == 1):
            return whole - 1
        return whole
    return int(x)


class _Context:
    """A span's calling context, for the spans below it: how many labels lead from the root to it, the
    first ``keep`` of them (all of them while there are no more), and its own and its parent's label."""

    def __init__(self, label: str, above: _Context | None, keep: int) -> None:
        self.label = label
        if above is None:
            self.depth = 1
            self.head: tuple[str, ...] = (label,)
            self.above_label = ""
        else:
            self.depth = above.depth + 1
            # one C call, where the unpacking form would build a list first
            self.head = above.head + (label,) if above.depth < keep else above.head  # noqa: RUF005
            self.above_label = above.label

    def path(self, keep: int, max_depth: int, elided: str) -> tuple[str, ...]:
        """The labels from the root, the first ``keep`` and the last when there are more than ``max_depth``
        (``max_depth`` = ``keep + 2``)."""
        depth = self.depth
        if depth <= keep:
            return self.head
        if depth > max_depth:
            return (*self.head, elided, self.label)
        if depth == keep + 1:
            return (*self.head, self.label)
        return (*self.head, self.above_label, self.label)


def critical_contexts(
    spans: Sequence[object],
    layout: SpanLayout,
    segments: Sequence[tuple[str, float, float]],
    max_depth: int,
    elided: str,
) -> dict[tuple[str, ...], int]:
    """Critical time (µs) per calling context: the loop of ``shared.critical_paths.trace_contexts``.

    ``segments``: (span id, start ms, end ms) of a critical path. A segment's context is the labels from
    its span up the parent links to a span without a (known) parent, reversed; a cycle ends the walk; more
    than ``max_depth`` (>= 2) labels keep the first ``max_depth - 2``, then ``elided``, then the last.
    Spans are found by id, the last one of an id winning. Each segment adds ``round(end * 1000) -
    round(start * 1000)`` to its context; contexts come in order of first appearance.

    O(n * max_depth): a walk up stops at the first span whose context is known, and every span a walk
    passed that ended at a root is known from then on (a walk into a cycle depends on where it started, so
    those are computed afresh).
    """
    fields = layout.fields
    at_id, at_parent = layout.span_id, layout.parent_span_id
    at_service, at_operation = layout.service_name, layout.operation_name
    # only strings are kept per span: a list of rows (tuples) would make the cyclic GC walk them all
    position: dict[str, int] = {}
    parents: list[str | None] = []
    services: list[str] = []
    operations: list[str] = []
    for span in spans:
        row = fields(span)
        position[row[at_id]] = len(parents)  # the last of an id wins
        parents.append(row[at_parent])
        services.append(row[at_service])
        operations.append(row[at_operation])
    keep = max_depth - 2
    known: dict[int, _Context] = {}
    paths: dict[str, tuple[str, ...]] = {}
    critical: dict[str, int] = {}  # µs per span id first: a string's hash is cached, a tuple's is not
    for span_id, start, end in segments:
        critical[span_id] = critical.get(span_id, 0) + _round(end * 1000) - _round(start * 1000)
        if span_id not in paths:
            walk: list[int] = []  # positions from the span up, below the first known one
            seen: set[str] = set()
            above: _Context | None = None
            current: str | None = span_id
            cycle = False
            while current is not None:
                if current in seen:
                    cycle = True
                    break
                at = position.get(current, -1)
                if at < 0:
                    break
                context = known.get(at)
                if context is not None:
                    above = context
                    break
                seen.add(current)
                walk.append(at)
                current = parents[at]
            if cycle:
                labels = [f"{services[at]}:{operations[at]}" for at in reversed(walk)]
                if len(labels) > max_depth:
                    labels = [*labels[:keep], elided, labels[-1]]
                path = tuple(labels)
            else:
                for at in reversed(walk):
                    label = f"{services[at]}:{operations[at]}"
                    above = known[at] = _Context(label, above, keep)
                path = above.path(keep, max_depth, elided) if above is not None else ()
            paths[span_id] = path
    contexts: dict[tuple[str, ...], int] = {}
    for span_id, critical_us in critical.items():  # a context first appears with its first span
        path = paths[span_id]
        contexts[path] = contexts.get(path, 0) + critical_us
    return contexts


class _OpShare:
    """One (service, operation, kind)'s spans of a trace, as ``shared.store.rollups.OpShare`` counts them."""

    def __init__(self, service: str, operation: str, kind: str | None, duration: int) -> None:
        self.service = service
        self.operation = operation
        self.kind = kind
        self.spans = 0
        self.errors = 0
        self.duration_us = 0
        self.low = duration
        self.high = duration
        self.buckets: dict[int, int] = {}
        self.error_duration_us = 0
        self.error_buckets: dict[int, int] = {}


OpShareRow = tuple[str, str, str, int, int, int, int, int, dict[int, int], int, dict[int, int]]


def sketch_bin(duration: int) -> int:
    """The latency sketch's bin of a duration (µs): 0 for 0 and below, else ``ceil(log(duration) / log(gamma)) + 1``."""
    if duration <= 0:
        return 0
    return math.ceil(math.log(duration) / _LOG_GAMMA) + 1


def sketch_key(bounds: list[int], duration: int) -> int:
    """A span's histogram key: its fixed bucket by ``bounds`` and its sketch bin (see :data:`SKETCH_STRIDE`)."""
    return (_bucket(bounds, duration) + 1) * SKETCH_STRIDE + sketch_bin(duration)


def split_key(key: int, legacy_bins: Sequence[int]) -> tuple[int, int]:
    """(fixed bucket, sketch bin) of a histogram key; a key below :data:`SKETCH_STRIDE` is a fixed bucket
    alone, whose bin is ``legacy_bins[key]``."""
    if key < SKETCH_STRIDE:
        return key, legacy_bins[key]
    return key // SKETCH_STRIDE - 1, key % SKETCH_STRIDE


def _bucket(bounds: list[int], duration: int) -> int:
    """``bisect.bisect_left(bounds, duration)``: the first bucket whose bound is >= the duration."""
    if _INTERPRETED:
        return bisect_left(bounds, duration)
    low = 0
    high = len(bounds)
    while low < high:
        middle = (low + high) // 2
        if bounds[middle] < duration:
            low = middle + 1
        else:
            high = middle
    return low


def _add_pairs(pairs: dict[tuple[str, str], None], tags: dict[str, Any]) -> None:
    """Add each (key, value text) of ``tags``: a str as it is, a bool as ``true``/``false``, else ``str()``."""
    for key, value in tags.items():
        if type(value) is str:
            pairs[key, value] = None
        elif value is True:
            pairs[key, "true"] = None
        elif value is False:
            pairs[key, "false"] = None
        else:
            pairs[key, str(value)] = None


def span_shares(
    spans: Sequence[object],
    layout: SpanLayout,
    bounds: list[int],
    flat_tags: Callable[[Any], dict[str, Any]],
    with_tags: bool = True,
) -> tuple[list[OpShareRow], list[tuple[str, str]]]:
    """The loop of ``shared.store.rollups.contribution`` over every span given (duplicates too).

    Per (service, operation, kind), in order of first appearance: (service, operation, kind or "",
    spans, error spans, duration sum, min, max, histogram (:func:`sketch_key` by ``bounds`` -> spans, by first
    appearance), error spans' duration sum, their histogram); a missing duration counts as 0. And the
    distinct (key, value text) pairs, in order of first appearance, of each span's tags, of
    ``flat_tags(span)`` when it has a resource or a scope, and of its logs' fields (none without
    ``with_tags``: a share only taken out of the rollups needs no tags).
    """
    fields = layout.fields
    at_service, at_operation, at_kind = layout.service_name, layout.operation_name, layout.kind
    at_duration, at_status, at_tags, at_logs = layout.duration_us, layout.status, layout.tags, layout.logs
    at_resource, at_scope_name, at_scope_version = layout.resource, layout.scope_name, layout.scope_version
    shares: dict[tuple[str, str, str | None], _OpShare] = {}
    pairs: dict[tuple[str, str], None] = {}
    for span in spans:
        row = fields(span)
        service: str = row[at_service]
        operation: str = row[at_operation]
        kind: str | None = row[at_kind]
        key = (service, operation, kind)
        raw_duration: int | None = row[at_duration]
        duration = raw_duration if raw_duration else 0
        share = shares.get(key)
        if share is None:
            share = shares[key] = _OpShare(service, operation, kind, duration)
        share.spans += 1
        share.duration_us += duration
        if duration < share.low:
            share.low = duration
        elif duration > share.high:
            share.high = duration
        bucket = sketch_key(bounds, duration)
        buckets = share.buckets
        buckets[bucket] = buckets.get(bucket, 0) + 1
        if row[at_status] == "error":
            share.errors += 1
            share.error_duration_us += duration
            errors = share.error_buckets
            errors[bucket] = errors.get(bucket, 0) + 1
        if not with_tags:
            continue
        _add_pairs(pairs, row[at_tags])
        if row[at_resource] or row[at_scope_name] is not None or row[at_scope_version] is not None:
            _add_pairs(pairs, flat_tags(span))  # resource attributes and scope are searched too
        logs: Sequence[Any] = row[at_logs]
        for log in logs:  # and log fields
            _add_pairs(pairs, log.fields)
    rows: list[OpShareRow] = [
        (
            share.service,
            share.operation,
            share.kind or "",
            share.spans,
            share.errors,
            share.duration_us,
            share.low,
            share.high,
            share.buckets,
            share.error_duration_us,
            share.error_buckets,
        )
        for share in shares.values()
    ]
    return rows, list(pairs)


def op_index(ops: Sequence[OpShareRow]) -> list[tuple[str, str, int, int]]:
    """``shared.store.rollups.Contribution.index_ops`` of the op rows: (service, operation, min, max) per
    (service, operation) and per service (operation ``""``), in order of first appearance."""
    rows: dict[tuple[str, str], list[int]] = {}
    for op in ops:
        service = op[0]
        low = op[6]
        high = op[7]
        for key in ((service, op[1]), (service, "")):
            row = rows.get(key)
            if row is None:
                rows[key] = [low, high]
            else:
                if low < row[0]:
                    row[0] = low
                if high > row[1]:
                    row[1] = high
    return [(key[0], key[1], row[0], row[1]) for key, row in rows.items()]


def add_op_shares(
    rows: dict[tuple[int, tuple[str, str, str]], list[int]],
    bins: dict[tuple[int, tuple[str, str, str, int]], list[int]],
    minute: int,
    ops: Sequence[OpShareRow],
    sign: int,
    width: int,
    legacy_bins: Sequence[int],
) -> None:
    """The operations loop of ``shared.store.rollups.RollupDelta.add``: each op row's spans, error spans
    and duration sum, then its fixed-bucket histogram from position 3, added ``sign`` times to the row of
    (minute, (service, operation, kind)) in ``rows`` (``width`` zeros when new); its sketch bins to the
    rows of (minute, (service, operation, kind, bin)) in ``bins``. A histogram key below
    :data:`SKETCH_STRIDE` is a fixed bucket alone, whose spans count in ``legacy_bins[bucket]``."""
    for op in ops:
        key = (minute, (op[0], op[1], op[2]))
        row = rows.get(key)
        if row is None:
            row = [0] * width
            rows[key] = row
        row[0] += sign * op[3]
        row[1] += sign * op[4]
        row[2] += sign * op[5]
        for hkey, n in op[8].items():
            bucket, index = split_key(hkey, legacy_bins)
            row[3 + bucket] += sign * n
            bkey = (minute, (op[0], op[1], op[2], index))
            brow = bins.get(bkey)
            if brow is None:
                bins[bkey] = [sign * n]
            else:
                brow[0] += sign * n


SpanSumRow = tuple[str, str, str, str, int, int, dict[int, int]]


def span_sums(
    shares: Sequence[Sequence[OpShareRow]],
    weights: Sequence[int],
    kinds: dict[str, str],
    unknown_kind: str,
    unset: str,
    error: str,
) -> list[SpanSumRow]:
    """``ingest.metrics.span_sums`` over the op rows of each trace, each counted its trace's ``weights``
    times (adjusted count): per (service, operation, kind label, status label) in order of first
    appearance, the spans, their duration sum and their histogram (bucket -> spans). A row's spans without
    error count under ``unset``, its error spans under ``error``."""
    sums: dict[tuple[str, str, str, str], tuple[list[int], dict[int, int]]] = {}
    for ops, weight in zip(shares, weights, strict=True):
        for row in ops:
            service = row[0]
            operation = row[1]
            label = kinds.get(row[2], unknown_kind)
            spans = row[3]
            errors = row[4]
            hist = row[8]
            error_hist = row[10]
            if spans > errors:
                key = (service, operation, label, unset)
                entry = sums.get(key)
                if entry is None:
                    entry = sums[key] = ([0, 0], {})
                totals, counts = entry
                totals[0] += weight * (spans - errors)
                totals[1] += weight * (row[5] - row[9])
                for bucket, n in hist.items():
                    counts[bucket] = counts.get(bucket, 0) + weight * (n - error_hist.get(bucket, 0))
            if errors:
                key = (service, operation, label, error)
                entry = sums.get(key)
                if entry is None:
                    entry = sums[key] = ([0, 0], {})
                totals, counts = entry
                totals[0] += weight * errors
                totals[1] += weight * row[9]
                for bucket, n in error_hist.items():
                    counts[bucket] = counts.get(bucket, 0) + weight * n
    return [(k[0], k[1], k[2], k[3], v[0][0], v[0][1], v[1]) for k, v in sums.items()]
