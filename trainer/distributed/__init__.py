"""Distributed MAMDR on torch.distributed: data-parallel DN with one all-reduce of the outer deltas,
DR partitioned by domain, and the paper's static/dynamic embedding caches over the feature store.

Modules: ``comm`` (env, group, collectives, control words), ``plan`` (what rank 0 sends per round),
``cache`` (static cache + byte counters), ``round`` (one rank's round; ``simulate`` = the
single-process reference), ``service`` (rank 0's Coordinator, the worker loop), ``launch`` (the CLI
roles). Running a saved plan on N local ranks lives with the tests (``tests/support/distributed_harness.py``)
and the paper-scale arithmetic of docs/distributed.md with the benchmarks (``bench/distributed_scale.py``).
"""
