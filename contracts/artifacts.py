"""Where model versions live, and reading and verifying one (torch-free; the trainer verifies with it too).

``open_artifacts(url)`` picks the artifacts backend by URL scheme through :data:`BACKENDS` (today only
``file://DIR``: versions are folders under DIR), the same way streams, feature stores and registries are
picked (:func:`contracts.urls.open_backend`).

Layout (names from ``contracts.manifest``): ``<root>/<version>/manifest.json``, ``shared.onnx`` and
``deltas/<domain>.onnx``. Paths in the manifest are relative to ``<root>``, so a version may point at
its parent's unchanged delta files. Loading checks every sha256 and every delta tensor's name and
shape against the shared graph before anything is served; a delta's bytes are checked again when it
is actually read (files are immutable once published, so the re-check is cheap insurance).
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from pydantic import ValidationError

from contracts.errors import IntegrityError, NotFound
from contracts.manifest import MANIFEST_FILE, DeltaEntry, Manifest
from contracts.urls import BackendUrl, open_backend

_CHUNK = 1 << 20

# scheme -> "module:Class" (see contracts.urls).
BACKENDS: dict[str, str] = {"file": "contracts.artifacts:FileArtifacts"}


class FileArtifacts:
    """``file://DIR``: version ``vNNNNNN`` is the folder ``DIR/vNNNNNN``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def from_url(cls, parsed: BackendUrl, settings: object = None) -> FileArtifacts:
        return cls(parsed.path)


def open_artifacts(url: str, what: str = "artifacts") -> FileArtifacts:
    """The artifacts store behind ``url``; ``ConfigError`` naming the supported schemes otherwise."""
    return open_backend(url, BACKENDS, what, None, FileArtifacts)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def manifest_digest(version_dir: Path) -> str:
    """sha256 of a version's manifest file: what the registry records at publish, serving compares."""
    try:
        return sha256_file(Path(version_dir) / MANIFEST_FILE)
    except FileNotFoundError:
        raise NotFound(f"no {MANIFEST_FILE} in {version_dir}; is the version published?") from None


_MANIFESTS: OrderedDict[str, Manifest] = OrderedDict()  # parsed manifests by the sha256 of their bytes
_MANIFESTS_HELD = 16
_MANIFESTS_LOCK = threading.Lock()


def read_manifest(version_dir: Path, expected_sha256: str | None = None) -> Manifest:
    """The manifest; with ``expected_sha256`` (recorded by the registry at publish) its bytes must match
    it, else ``IntegrityError``: a manifest edited after publication is refused.

    Parsed manifests are kept by the sha256 of their bytes (the bytes are read and hashed every time, the
    parse is what a trainer with 10,000 domains paid six times per round, ~0.4 s each). The result may be
    shared: treat it as read-only."""
    path = version_dir / MANIFEST_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"no {MANIFEST_FILE} in {version_dir}; is the version published?") from None
    digest = sha256_bytes(data)
    if expected_sha256 is not None and digest != expected_sha256:
        raise IntegrityError(f"{path} does not match the sha256 the registry recorded at publish; "
                             "the manifest was changed after publication: republish the version")
    with _MANIFESTS_LOCK:
        manifest = _MANIFESTS.get(digest)
        if manifest is not None:
            _MANIFESTS.move_to_end(digest)
            return manifest
    try:
        manifest = Manifest.model_validate_json(data)
    except ValidationError as exc:
        raise IntegrityError(f"{path} is not a valid manifest: {exc.errors()[0]['msg']}") from None
    with _MANIFESTS_LOCK:
        _MANIFESTS[digest] = manifest
        while len(_MANIFESTS) > _MANIFESTS_HELD:
            _MANIFESTS.popitem(last=False)
    return manifest


def resolve(version_dir: Path, manifest: Manifest, rel: str) -> Path:
    """A manifest path (relative to the artifacts root) as a file, also while in a temp dir."""
    head, _, rest = rel.partition("/")
    if ".." in rel.replace("\\", "/").split("/") or rel.startswith("/"):
        raise IntegrityError(f"manifest path {rel!r} escapes the artifacts root")
    if head == manifest.version:
        return version_dir / rest
    return version_dir.parent / rel


def read_verified(path: Path, sha256: str, offset: int | None = None, length: int | None = None) -> bytes:
    """A file's bytes (or bytes [offset, offset + length) of it: a delta in a pack), checked against ``sha256``."""
    try:
        if offset is None:
            data = path.read_bytes()
        else:
            with path.open("rb") as fh:
                fh.seek(offset)
                data = fh.read(length if length is not None else -1)
    except FileNotFoundError:
        raise IntegrityError(f"artifact {path} is missing") from None
    if sha256_bytes(data) != sha256:
        raise IntegrityError(f"artifact {path} fails its sha256 check; republish the version")
    return data


def parse_initializers(data: bytes, what: str) -> dict[str, np.ndarray]:
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise IntegrityError(f"{what} is not a readable ONNX file ({type(exc).__name__})") from None
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


@dataclass
class LoadedVersion:
    """A verified version: the shared graph's bytes and initializers, and where each delta lives."""

    manifest: Manifest
    version_dir: Path
    shared_bytes: bytes
    shared: dict[str, np.ndarray]
    delta_paths: dict[str, Path] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def delta_names(self) -> list[str]:
        """Every tensor some domain overrides (sorted): the ones a composer must be able to replace."""
        return sorted({t.name for e in self.manifest.deltas.values() for t in e.tensors})

    @property
    def delta_dtype(self) -> str:
        """``float16`` when every delta tensor of the version is stored so, else ``float32`` (a version mixing
        both, e.g. an old parent's files, is held in float32: upcasting float16 is exact, the reverse is not)."""
        dtypes = {t.dtype for e in self.manifest.deltas.values() for t in e.tensors}
        return "float16" if dtypes == {"float16"} else "float32"

    def read_delta(self, domain: str) -> dict[str, np.ndarray]:
        """θi of a domain in the dtype it is stored in ({} for a domain served by θS alone): float16 deltas
        stay float16, so a server holding many domains holds half the bytes."""
        entry = self.manifest.deltas.get(domain)
        if entry is None:
            return {}
        data = read_verified(self.delta_paths[domain], entry.sha256, entry.offset, entry.length)
        arrays = parse_initializers(data, f"delta of {domain!r}")
        expected = {t.name: t.shape for t in entry.tensors}
        if {n: list(a.shape) for n, a in arrays.items()} != expected:
            raise IntegrityError(f"delta of {domain!r} does not hold the tensors its manifest lists")
        dtypes = {t.name: t.dtype for t in entry.tensors}
        if any(a.dtype.name != dtypes[n] for n, a in arrays.items()):
            raise IntegrityError(f"delta of {domain!r} does not hold the dtypes its manifest lists")
        return {n: np.ascontiguousarray(a) for n, a in arrays.items()}


def version_dir_of(artifact_uri: str, artifacts_url: str) -> Path:
    """A registry artifact URI as a folder; a bare relative path is taken under ``artifacts_url``."""
    if "://" in artifact_uri:
        return open_artifacts(artifact_uri, "model artifact").root
    return open_artifacts(artifacts_url).root / artifact_uri


def load_version(version_dir: Path, manifest_sha256: str | None = None) -> LoadedVersion:
    """Read the manifest (checked against ``manifest_sha256`` when given), verify every checksum and
    every delta shape. Raises ``IntegrityError`` (``NotFound`` without a manifest)."""
    version_dir = Path(version_dir)
    manifest = read_manifest(version_dir, manifest_sha256)
    shared_bytes = read_verified(resolve(version_dir, manifest, manifest.shared_path), manifest.shared_sha256)
    shared = parse_initializers(shared_bytes, f"shared graph of {manifest.version}")
    paths: dict[str, Path] = {}
    resolved: dict[str, Path] = {}  # a pack is named by many entries: resolve and map it once
    with contextlib.ExitStack() as stack:
        packs: dict[Path, mmap.mmap] = {}
        for domain, entry in manifest.deltas.items():
            path = resolved.get(entry.path)
            if path is None:
                path = resolved[entry.path] = resolve(version_dir, manifest, entry.path)
            try:
                if entry.offset is None:
                    actual = sha256_file(path)
                else:
                    if path not in packs:
                        fh = stack.enter_context(path.open("rb"))
                        packs[path] = stack.enter_context(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
                    end = entry.offset + (entry.length or 0)
                    if entry.offset < 0 or end > len(packs[path]):
                        raise IntegrityError(f"delta of {domain!r} lies outside its pack {path}")
                    actual = sha256_bytes(packs[path][entry.offset:end])
            except FileNotFoundError:
                raise IntegrityError(f"delta of {domain!r} ({path}) is missing") from None
            except ValueError:  # mmap of an empty file
                raise IntegrityError(f"delta of {domain!r} lies outside its pack {path} (empty)") from None
            if actual != entry.sha256:
                raise IntegrityError(f"delta of {domain!r} ({path}) fails its sha256 check")
            check_delta_shapes(domain, entry, shared)
            paths[domain] = path
    return LoadedVersion(manifest, version_dir, shared_bytes, shared, paths)


def check_delta_shapes(domain: str, entry: DeltaEntry, shared: dict[str, np.ndarray]) -> None:
    """Every tensor of a delta overrides one of the shared graph, with its shape."""
    for spec in entry.tensors:
        base = shared.get(spec.name)
        if base is None or list(base.shape) != spec.shape:
            raise IntegrityError(f"delta of {domain!r} has {spec.name!r} {spec.shape}, not in the graph")
