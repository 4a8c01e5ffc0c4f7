"""Serving's own errors; all are ``MamdrError`` subclasses mapped by ``contracts.http`` (one handler)."""

from __future__ import annotations

from contracts.errors import BackendUnavailable, DataError


class ModelNotReady(BackendUnavailable):
    """No verified model version is loaded yet (503 + Retry-After; /readyz says the same)."""


class TooManyItems(DataError):
    """More candidates than ``serving.max_items`` (422)."""


class FeatureStoreUnavailable(BackendUnavailable):
    """The feature store did not answer or answered with vectors that do not fit the model (503)."""


class ScoringUnavailable(BackendUnavailable):
    """A domain's artifacts failed verification when read, or onnxruntime refused the run (503)."""


def _ort_errors() -> tuple[type[BaseException], ...]:
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
    except ImportError:  # pragma: no cover - onnxruntime is a serving dependency
        return (OSError,)
    names = ("Fail", "InvalidArgument", "RuntimeException", "InvalidGraph", "NoSuchFile", "EPFail",
             "NoModel", "ModelLoaded", "NotImplemented", "InvalidProtobuf")
    return (OSError, MemoryError, *(getattr(ort_state, n) for n in names if hasattr(ort_state, n)))


ORT_ERRORS = _ort_errors()  # what an onnxruntime run may raise that is a server-side fault, not a bug here
