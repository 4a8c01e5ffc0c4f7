"""Distributed MAMDR on torch.distributed: every rank a full continual trainer on its own partitions.

Modules: ``comm`` (env, group, collectives), ``replica`` (a rank's part: lockstep polling, the round's
vocabulary sync, the reconciliation of parameters and deltas, the publish with every rank's offsets),
``launch`` (the CLI roles). The paper-scale arithmetic of docs/distributed.md is in
``bench/distributed_scale.py``.
"""
