"""ONNX export of θS and per-domain θi deltas, published atomically as one model version.

Entry point: :func:`trainer.export.exporter.export_version`. Torch is imported lazily so that
``import trainer.export`` stays cheap; ``publish`` and the serving-side reader are torch-free.
"""

from __future__ import annotations

from typing import Any

__all__ = ["export_version", "publish_version", "set_live_pointer"]


def __getattr__(name: str) -> Any:
    if name == "export_version":
        from trainer.export.exporter import export_version

        return export_version
    if name in ("publish_version", "set_live_pointer"):
        from trainer.export import publish

        return getattr(publish, name)
    raise AttributeError(name)
