"""Retention of published versions: what the continual trainer keeps, and the idempotent gc of the rest.

Kept (the *keep set*): the newest ``keep_versions`` published versions, the live one, every pinned
one (``TrainerSettings.pinned_versions``), and the rollback target (the superseded version that was
live most recently: what ``registry.rollback()`` would restore). Also kept, as files only: every
file a kept manifest points at (a version's unchanged deltas live in an ancestor's folder), every
feature-store version a kept manifest names (the store keeps every row such a version reads through
its parents: feature_store/lineage.py), and every checkpoint a kept version's checkpoint chain
needs back to its full base (incremental checkpoints: trainer/service/state.py).

Everything else the trainer produced (ids ``vNNNNNN``; other ids are never touched) is deleted, in
an order that leaves a consistent state wherever a crash stops it:

1. the registry record first (``delete_model``): from then on nobody can promote or roll back to
   the version, so deleting its files can no longer break a live model;
2. feature-store versions no kept manifest names (one ``gc(0, protect=...)``);
3. trainer checkpoints no kept version's chain needs; a checkpoint (with its chain) is kept for
   *every* kept version, so a restart after any rollback the registry allows finds it;
4. version folders: the manifest first (the folder stops being a version), then each file no kept
   manifest references; a folder still holding referenced deltas stays as a husk of those files;
5. crash leftovers older than ``grace_s``: ``.tmp-*`` folders of interrupted publishes and
   checkpoints, ``.LIVE.*`` pointer temp files.

Every step only deletes what the keep set excludes, and the keep set does not change between runs
unless a version is published, so running it again (after a crash anywhere, ``mid_gc`` failpoint)
finishes the job and a second run deletes nothing. Retention runs after the offsets are committed,
so a crash inside it loses no event. Registry records are deleted together with their files: a
record without files would be a rollback target serving cannot load (the audit trail keeps the
history).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from contracts.artifacts import read_manifest
from contracts.errors import Conflict, DataError, IntegrityError, NotFound
from contracts.manifest import LIVE_POINTER_FILE, MANIFEST_FILE, Manifest
from domain_registry.base import Registry
from feature_store.base import EmbeddingStore
from trainer.service.failpoints import failpoint
from trainer.service.state import CHECKPOINT_DIR, checkpoint_chain

log = logging.getLogger("mamdr.trainer.retention")
VERSION_RE = re.compile(r"^v(\d{6})$")
TMP_PREFIX = ".tmp-"
DEFAULT_GRACE_S = 60.0


@dataclass
class RetentionReport:
    kept: list[str]
    records: list[str] = field(default_factory=list)  # registry records deleted
    feature_store: list[str] = field(default_factory=list)  # feature-store versions deleted
    checkpoints: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)  # version folders deleted (or reduced to husks)
    leftovers: list[str] = field(default_factory=list)  # temp files and folders of crashed writers

    @property
    def deleted(self) -> int:
        return len(self.records) + len(self.feature_store) + len(self.checkpoints) + len(self.folders) + len(
            self.leftovers)


def _versions_in(folder: Path) -> set[str]:
    if not folder.exists():
        return set()
    return {p.name for p in folder.iterdir() if p.is_dir() and VERSION_RE.match(p.name)}


def published_versions(root: Path) -> list[str]:
    """Trainer versions with a manifest under ``root``, oldest first."""
    return sorted(v for v in _versions_in(root) if (root / v / MANIFEST_FILE).exists())


def keep_set(root: Path, registry: Registry, keep_versions: int, pinned: Collection[str] = ()) -> set[str]:
    """The versions retention keeps (see the module docstring)."""
    keep = set(published_versions(root)[-keep_versions:]) if keep_versions > 0 else set()
    keep |= set(pinned)
    live = registry.live_model()
    if live is not None:
        keep.add(live.id)
    superseded = [m for m in registry.list_models(limit=1_000_000) if m.status == "superseded"]
    if superseded:  # what registry.rollback() restores: the one live most recently
        keep.add(max(superseded, key=lambda m: (m.promoted_at or 0.0, m.id)).id)
    return keep


def _manifest(root: Path, version: str) -> Manifest | None:
    try:
        return read_manifest(root / version)
    except (NotFound, IntegrityError):
        return None


def _referenced(root: Path, kept: Collection[str]) -> tuple[set[str], set[str], list[str]]:
    """(files relative to ``root``, feature-store versions) that kept manifests point at.

    The third item lists kept versions whose folder exists but whose manifest cannot be read: what
    they reference is unknown, so the caller must not delete files or embeddings this time.
    """
    files: set[str] = set()
    fs_versions: set[str] = set()
    unreadable: list[str] = []
    for version in kept:
        manifest = _manifest(root, version)
        if manifest is None:
            if (root / version).is_dir():
                unreadable.append(version)
            continue
        files.add(f"{version}/{MANIFEST_FILE}")
        files.add(manifest.shared_path)
        files.update(e.path for e in manifest.deltas.values())
        if manifest.feature_store_version:
            fs_versions.add(manifest.feature_store_version)
    return files, fs_versions, unreadable


def _older_than(path: Path, grace_s: float, now: float) -> bool:
    try:
        return now - path.stat().st_mtime >= grace_s
    except FileNotFoundError:
        return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _prune_folder(root: Path, version: str, referenced: set[str]) -> bool:
    """Delete a doomed version folder's files except referenced ones; True if anything was deleted."""
    folder = root / version
    manifest = folder / MANIFEST_FILE
    changed = manifest.exists()
    with contextlib.suppress(FileNotFoundError):  # first: from here on the folder is no version
        manifest.unlink()
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            with contextlib.suppress(OSError):  # only empty ones go
                path.rmdir()
        elif rel not in referenced:
            path.unlink(missing_ok=True)
            changed = True
    with contextlib.suppress(OSError):
        folder.rmdir()
        changed = True
    return changed


def apply_retention(root: Path, registry: Registry, store: EmbeddingStore | None, keep_versions: int,
                    pinned: Collection[str] = (), grace_s: float = DEFAULT_GRACE_S) -> RetentionReport:
    """Delete what the keep set excludes (records, embeddings, checkpoints, folders, leftovers)."""
    root = Path(root)
    kept = keep_set(root, registry, keep_versions, pinned)
    ckpt = root / CHECKPOINT_DIR
    report = RetentionReport(kept=[])
    # 1. registry records (trainer-named ones only; the live one is always in the keep set)
    for m in registry.list_models(limit=1_000_000):
        if VERSION_RE.match(m.id) and m.id not in kept:
            try:
                if registry.delete_model(m.id, actor="trainer:retention"):
                    report.records.append(m.id)
            except NotFound:
                pass
            except Conflict:  # promoted by an operator since we looked: keep it this time
                kept.add(m.id)
    failpoint("mid_gc")
    report.kept = sorted(kept)
    files, fs_kept, unreadable = _referenced(root, kept)
    if unreadable:  # never guess what a damaged kept manifest points at
        log.warning("retention keeps every file and embedding version this time: the manifests of kept "
                    "versions %s cannot be read", unreadable)
    # 2. embeddings no kept manifest names (versions with other names are left alone)
    if store is not None and not unreadable:
        protect = fs_kept | kept | {v for v in store.versions() if not VERSION_RE.match(v)}
        with contextlib.suppress(NotFound):
            report.feature_store = store.gc(0, protect=protect)
    # 3. checkpoints: the chain of every kept version, no others (a broken chain keeps every checkpoint)
    needed = set(kept)
    for version in kept:
        try:
            needed.update(checkpoint_chain(root, version))
        except DataError:
            if (ckpt / version).exists():
                needed |= _versions_in(ckpt)
    for version in sorted(_versions_in(ckpt) - needed):
        shutil.rmtree(ckpt / version, ignore_errors=True)
        report.checkpoints.append(version)
    # 4. version folders (referenced delta files survive as husks)
    for version in sorted(_versions_in(root) - kept) if not unreadable else []:
        if _prune_folder(root, version, files):
            report.folders.append(version)
    # 5. leftovers of writers killed mid-write
    now = time.time()
    for base in (root, ckpt):
        if not base.exists():
            continue
        for path in base.iterdir():
            leftover = path.name.startswith(TMP_PREFIX) or path.name.startswith(f".{LIVE_POINTER_FILE}.")
            if leftover and _older_than(path, grace_s, now):
                _remove(path)
                report.leftovers.append(os.path.relpath(path, root))
    if report.deleted:
        log.info("retention kept %s; deleted records %s, embeddings %s, checkpoints %s, folders %s, "
                 "leftovers %s", report.kept, report.records, report.feature_store, report.checkpoints,
                 report.folders, report.leftovers)
    missing = sorted(v for v in pinned if not (root / v / MANIFEST_FILE).exists())
    if missing:
        log.warning("pinned versions %s are not published under %s", missing, root)
    return report


def disk_bytes(root: Path) -> int:
    """Bytes of every file under ``root`` (the soak test's flatness figure)."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())
