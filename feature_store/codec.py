"""Vector wire format: little-endian float32 (or float16) bytes of an exact, declared dimension.

Raw bytes rather than JSON or pickle: a 128-d float32 vector is 512 bytes, decodes with one
``np.frombuffer`` and can never execute code. Validation happens on write so readers can trust
every stored value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from contracts.errors import ConfigError, DataError

DTYPES: dict[str, np.dtype] = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}


def wire_dtype(name: str) -> np.dtype:
    """The numpy dtype of a wire format name ("float32" or "float16")."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ConfigError(f"feature store dtype {name!r} is not supported; use float32 or float16") from None


def check_vectors(ids: Sequence[str], vectors: np.ndarray, dim: int, dtype: str, what: str) -> np.ndarray:
    """Validate a write batch and return it cast to the wire dtype, C-contiguous.

    Refuses a batch whose shape is not [len(ids), dim] and any non-finite value, also one that
    only becomes infinite when cast to float16.
    """
    arr = np.asarray(vectors)
    if arr.ndim != 2:
        raise DataError(f"{what}: vectors must be 2-D [n, {dim}], got shape {arr.shape}")
    if arr.shape[0] != len(ids):
        raise DataError(f"{what}: {len(ids)} ids but {arr.shape[0]} vectors")
    if arr.shape[1] != dim:
        raise DataError(f"{what}: vectors have dimension {arr.shape[1]}, the version declares {dim}")
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{what}: vectors must be numeric, got dtype {arr.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        wire = np.ascontiguousarray(arr, dtype=wire_dtype(dtype))
    finite = np.isfinite(wire).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise DataError(
            f"{what}: vector for id {ids[row]!r} has a NaN or infinite value (in {dtype}); fix the source"
        )
    return wire


def encode_rows(wire: np.ndarray) -> list[bytes]:
    """One bytes value per row of an already validated wire-dtype array.

    Viewing each row as one opaque void scalar lets ``tolist`` build the bytes objects in C
    (~5x faster than slicing one big bytes object in Python).
    """
    if wire.shape[0] == 0:
        return []
    rows = np.ascontiguousarray(wire).view(np.dtype((np.void, wire.shape[1] * wire.itemsize)))
    return rows.ravel().tolist()


def encode(vector: np.ndarray, dim: int, dtype: str = "float32") -> bytes:
    """Encode one vector (validated)."""
    wire = check_vectors(["<vector>"], np.asarray(vector).reshape(1, -1), dim, dtype, "encode")
    return encode_rows(wire)[0]


def decode(raw: bytes, dim: int, dtype: str = "float32") -> np.ndarray:
    """Decode one stored value to float32, refusing a length that does not match the dimension."""
    wdt = wire_dtype(dtype)
    if len(raw) != dim * wdt.itemsize:
        raise DataError(f"stored vector has {len(raw)} bytes, expected {dim} x {dtype}; the store is corrupt")
    return np.frombuffer(raw, dtype=wdt).astype(np.float32)


def decode_into(out: np.ndarray, values: Sequence[bytes | None], dim: int, dtype: str) -> list[int]:
    """Fill rows of ``out`` [n, dim] float32 from stored values; None rows stay zero.

    Returns the positions that were missing. One join + one frombuffer for all present rows.
    """
    wdt = wire_dtype(dtype)
    if None in values:
        present = [i for i, v in enumerate(values) if v is not None]
        missing = [i for i, v in enumerate(values) if v is None]
        if not present:
            return missing
        raw = b"".join([values[i] for i in present])  # type: ignore[misc]
    else:  # the common case: everything found, no index lists
        present, missing = None, []
        raw = b"".join(values)  # type: ignore[arg-type]
    n = len(values) if present is None else len(present)
    if len(raw) != n * dim * wdt.itemsize:
        for v in values:
            if v is not None:
                decode(v, dim, dtype)  # raises naming the bad length
    block = np.frombuffer(raw, dtype=wdt).reshape(n, dim)
    if present is None:
        out[:] = block
    else:
        out[present] = block
    return missing
