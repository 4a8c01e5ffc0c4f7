"""Atomic publication of a model version folder (torch-free).

Everything is written into ``<root>/.tmp-<version>-<random>/`` beside the final folder, fsynced,
verified with the same loader serving uses (checksums, delta shapes against the shared graph), and
only then renamed to ``<root>/<version>`` in one step: a reader sees the whole version or none of it.
A domain whose delta file is byte-identical to its parent's keeps pointing at the parent's file.
A version that writes many deltas writes them into one pack file (``DeltaEntry.offset``/``length``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from contracts.artifacts import load_version, read_manifest, sha256_bytes
from contracts.errors import ConfigError, Conflict
from contracts.events import is_domain_id
from contracts.manifest import (
    DELTA_PACK_FILE,
    DELTAS_DIR,
    LIVE_POINTER_FILE,
    MANIFEST_FILE,
    SHARED_MODEL_FILE,
    DeltaEntry,
    InputContract,
    Manifest,
    TensorSpec,
    delta_file,
)
from domain_registry.base import is_version_id

PACK_MIN = 32  # deltas a version writes from which they share one file (a fsync per file costs 0.2-1.3 ms here)
MAX_CARRY = 8  # versions a packed delta may be carried unchanged before it is written again


def _write(path: Path, data: bytes, fsync: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_new_version(root: Path, version: str) -> None:
    """``ConfigError`` for an id that is not a safe folder name, ``Conflict`` if it is taken."""
    if not is_version_id(version):  # the registry's rule; also a safe folder name (no '/', no leading '.')
        raise ConfigError(f"version id {version!r} must be letters, digits, '.', '_', '-' like v0003")
    if (Path(root) / version).exists():
        raise Conflict(f"version {version!r} already exists under {root}; pick a new id")


def publish_version(
    root: Path,
    version: str,
    shared_model: bytes,
    deltas: Mapping[str, tuple[bytes, Mapping[str, np.ndarray]]],
    contract: InputContract,
    *,
    parent: str | None = None,
    domains: list[str] | None = None,
    feature_store_version: str | None = None,
    cold_start: Mapping[str, list[float]] | None = None,
    offsets: Mapping[str, int] | None = None,
    events_included: int = 0,
    metrics: Mapping[str, object] | None = None,
    delta_dtype: str = "float32",
    fsync: bool = True,
    pack_min: int = PACK_MIN,
    max_carry: int = MAX_CARRY,
) -> Manifest:
    """Write, verify and atomically rename a version folder. ``deltas``: domain -> (file bytes, arrays).

    Raises ``Conflict`` if the version exists, ``ConfigError`` for a bad id, ``IntegrityError`` if
    the written files do not verify (nothing becomes visible then). ``fsync=False`` skips the
    per-file fsync (bulk synthetic versions in benchmarks; the rename stays atomic, not durable).
    When at least ``pack_min`` deltas are written they go into one pack file (one write and one fsync
    instead of one per domain); a packed delta carried unchanged for ``max_carry`` versions is written
    again, so an old pack is not kept alive for ever by the few domains that stopped changing.
    """
    root = Path(root)
    check_new_version(root, version)
    final = root / version
    parent_manifest = read_manifest(root / parent) if parent else None
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write(tmp / SHARED_MODEL_FILE, shared_model)
        entries: dict[str, DeltaEntry] = {}
        new: list[tuple[str, bytes, str, Mapping[str, np.ndarray]]] = []
        for domain in sorted(deltas):
            if not is_domain_id(domain):
                raise ConfigError(f"domain id {domain!r} is not a slug; see contracts.events.slugify")
            data, arrays = deltas[domain]
            if not arrays:
                continue  # served by θS alone: no file
            sha = sha256_bytes(data)
            previous = parent_manifest.deltas.get(domain) if parent_manifest else None
            if previous is not None and previous.sha256 == sha:
                if previous.offset is None:
                    entries[domain] = previous  # unchanged: keep pointing at the older file
                    continue
                if previous.carried + 1 < max_carry:
                    entries[domain] = previous.model_copy(update={"carried": previous.carried + 1})
                    continue
            new.append((domain, data, sha, arrays))
        packed = len(new) >= max(1, pack_min)
        offset = 0
        if packed:
            _write(tmp / DELTA_PACK_FILE, b"".join(data for _, data, _, _ in new), fsync)
        for domain, data, sha, arrays in new:
            specs = [TensorSpec(name=n, shape=list(a.shape), dtype=delta_dtype) for n, a in sorted(arrays.items())]
            if packed:
                entries[domain] = DeltaEntry(path=f"{version}/{DELTA_PACK_FILE}", sha256=sha, version=version,
                                             tensors=specs, offset=offset, length=len(data))
                offset += len(data)
                continue
            _write(tmp / delta_file(domain), data, fsync)
            entries[domain] = DeltaEntry(path=f"{version}/{delta_file(domain)}", sha256=sha, version=version,
                                         tensors=specs)
        manifest = Manifest(
            version=version, parent=parent, shared_path=f"{version}/{SHARED_MODEL_FILE}",
            shared_sha256=sha256_bytes(shared_model), contract=contract, deltas=entries,
            domains=sorted(set(domains or []) | set(deltas)), feature_store_version=feature_store_version,
            offsets=dict(offsets or {}), events_included=events_included, metrics=dict(metrics or {}),
            cold_start={k: list(v) for k, v in (cold_start or {}).items()},
        )
        _write(tmp / MANIFEST_FILE, manifest.to_json().encode())
        if (tmp / DELTAS_DIR).exists():
            _fsync_dir(tmp / DELTAS_DIR)
        _fsync_dir(tmp)
        load_version(tmp)  # verify exactly what serving will verify, before anyone can see it
        os.rename(tmp, final)  # atomic on one filesystem; fails if final appeared meanwhile
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def set_live_pointer(root: Path, version: str) -> None:
    """Registry-less setups: point ``<root>/LIVE`` at a published version (atomic replace)."""
    root = Path(root)
    read_manifest(root / version)
    tmp = root / f".{LIVE_POINTER_FILE}.{uuid.uuid4().hex[:8]}"
    _write(tmp, version.encode())
    os.replace(tmp, root / LIVE_POINTER_FILE)
