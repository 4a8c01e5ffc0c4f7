"""The composition root: the ``mamdr`` command, the quickstart and the local dev stack.

It wires every package (stream, trainer, feature store, registry, serving); no package imports it.
"""

__version__ = "0.1.0"
