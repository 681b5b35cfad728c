"""Finalization in a process of its own, beside the worker (why: docs/adr/0003-finalizer-process.md).

Each finalize round of :class:`ingest.scheduling.FinalizeScheduler` runs in ``python -m
ingest.finalizer.child``: the child opens the same store (a connection of its own, no trace cache), finds
the due traces of the shards the worker names, finalizes them and answers with the counts and the span
metrics of the traces finalized for the first time.

The guarantees are the in-process rounds': a round is one store transaction per share, for the shards the
worker owns when it asks, under the worker's ``finalizing`` lock (a revoked worker's round ends before the
next owner's starts). The child keeps no state between rounds: if it dies the round fails like a store
error (the work stays due) and the next round starts a new child. The child exits when its input closes,
so it never outlives the worker.

- :mod:`ingest.finalizer.protocol`: the messages and their framing on the pipes;
- :mod:`ingest.finalizer.client`: the worker's side, :class:`~ingest.finalizer.client.FinalizerProcess`;
- :mod:`ingest.finalizer.child`: the child process's main and its rounds.
"""
