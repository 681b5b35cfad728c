"""A chunk's bytes and CPU with and without the writer's trained zstd dictionary
(:class:`shared.store.encoding.Dictionaries`): encode (msgpack + zstd) and decode (zstd + msgpack +
validation) per chunk, in µs, and bytes a span stored, for each workload and two chunk shapes.

* ``trace``: a whole trace a chunk, as a batch that brings a trace at once (one message per trace);
* ``1-4 spans``: a trace cut into chunks of 1 to 4 spans, as batches of spans sent one at a time.

The dictionary is trained as a writer trains it: from the first chunks written (seed 7) once they reach
:data:`~shared.store.encoding.SAMPLE_BYTES`; it is measured on other traces (seed 99).

    python -m bench.chunks [--traces 2000] [--repeat 9]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence

from bench.layout import WORKLOADS, MakeTrace, render
from shared.models import Event
from shared.store.encoding import Dictionaries, decode_chunk, encode_chunk, train

T0 = 1_700_000_000_000_000
Shape = Callable[[random.Random, list[Event]], list[list[Event]]]


def whole(rng: random.Random, trace: list[Event]) -> list[list[Event]]:
    return [trace]


def pieces(rng: random.Random, trace: list[Event]) -> list[list[Event]]:
    out: list[list[Event]] = []
    while len(trace) > sum(map(len, out)):
        done = sum(map(len, out))
        out.append(trace[done : done + rng.randint(1, 4)])
    return out


SHAPES: dict[str, Shape] = {"trace": whole, "1-4 spans": pieces}


def chunks(make: MakeTrace, shape: Shape, seed: int, traces: int) -> list[list[Event]]:
    rng = random.Random(seed)
    return [c for i in range(traces) for c in shape(rng, list(make(rng, T0 + i * 1000)))]


def trained_writer(make: MakeTrace, shape: Shape) -> tuple[Dictionaries, Dictionaries]:
    """A writer that trained its dictionary on its first chunks, and a reader that loaded it."""
    writer = Dictionaries()
    rng = random.Random(7)
    samples = None
    while samples is None:
        for chunk in shape(rng, list(make(rng, T0))):
            encode_chunk(chunk, writer)
        samples = writer.samples()
    body = train(samples)
    assert body is not None
    writer.use(1, body)
    reader = Dictionaries()
    reader.load(1, body)
    return writer, reader


def timed(
    test: Sequence[list[Event]], bodies: Sequence[bytes], writer: Dictionaries | None, reader: Dictionaries | None
) -> tuple[float, float]:
    """Seconds to encode every chunk of ``test``, and to decode every one of ``bodies``."""
    start = time.perf_counter()
    for chunk in test:
        encode_chunk(chunk, writer)
    encoded = time.perf_counter()
    for body in bodies:
        decode_chunk(body, reader)
    return encoded - start, time.perf_counter() - encoded


def measure(test: Sequence[list[Event]], dicts: tuple[Dictionaries, Dictionaries], repeat: int) -> list[list[str]]:
    """Bytes a span, encode and decode µs a chunk, plain and with the dictionary: each the fastest of
    ``repeat`` runs over every chunk, the two interleaved (the host's load weighs on both alike)."""
    writer, reader = dicts
    sides = {"plain": (None, None), "dictionary": (writer, reader)}
    bodies = {label: [encode_chunk(c, w) for c in test] for label, (w, _) in sides.items()}
    best: dict[tuple[str, str], float] = {}
    for _ in range(repeat):
        for label, (w, r) in sides.items():
            for step, took in zip(("encode", "decode"), timed(test, bodies[label], w, r), strict=True):
                best[label, step] = min(best.get((label, step), took), took)
    spans = sum(map(len, test))
    rows = []
    for label in sides:
        encode, decode = (best[label, step] * 1e6 / len(test) for step in ("encode", "decode"))
        size = sum(map(len, bodies[label])) / spans
        rows.append([label, f"{size:.1f}", f"{encode:.1f}", f"{decode:.1f}", f"{encode + decode:.1f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=2000, help="traces measured per workload")
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    rows: list[list[str]] = []
    for name, make in WORKLOADS.items():
        for shape_name, shape in SHAPES.items():
            test = chunks(make, shape, 99, args.traces)
            for row in measure(test, trained_writer(make, shape), args.repeat):
                rows.append([name, shape_name, *row])
    header = ["workload", "chunk", "zstd", "B/span", "encode µs/chunk", "decode µs/chunk", "both"]
    print(render(header, rows))


if __name__ == "__main__":
    main()
