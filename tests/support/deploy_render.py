"""Offline helpers for the deployment-asset tests: a small kustomize and a reader of metric definitions.

Why a kustomize of our own: the tests must run with no network and no kubectl. It implements exactly the
kustomization fields k8s/ uses (resources, namespace, labels, images, strategic-merge patches with
``$patch: delete`` and null deletion) and refuses any other field, so a new field cannot be silently
ignored. When kubectl is installed, the tests also compare this output with ``kubectl kustomize``.
"""

from __future__ import annotations

import ast
import copy
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

Manifest = dict[str, Any]

SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
                  "CustomResourceDefinition", "PriorityClass"}
# Strategic-merge keys of the lists our patches touch; every other list is replaced by the patch's.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath"}


class KustomizeError(ValueError):
    pass


def key(doc: Manifest) -> tuple[str, str, str]:
    return doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]


def render(directory: Path) -> list[Manifest]:
    """The manifests ``kustomize build DIRECTORY`` would print (order aside)."""
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        raise KustomizeError(f"{directory} has no kustomization.yaml")
    spec = yaml.safe_load(kfile.read_text())
    unknown = set(spec) - SUPPORTED_FIELDS
    if unknown:
        raise KustomizeError(f"{kfile}: fields {sorted(unknown)} are not supported by the offline renderer")
    docs: list[Manifest] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            docs.extend(render(path))
        else:
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for patch in spec.get("patches", []):
        docs = _apply_patch(docs, _load_patch(directory, patch))
    if "namespace" in spec:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = spec["namespace"]
    for group in spec.get("labels", []):
        if group.get("includeSelectors") or group.get("includeTemplates"):
            raise KustomizeError("labels with includeSelectors/includeTemplates are not supported")
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(group["pairs"])
    for image in spec.get("images", []):
        for doc in docs:
            for container in iter_containers(doc):
                _set_image(container, image)
    return docs


def _load_patch(directory: Path, patch: dict[str, Any]) -> Manifest:
    if set(patch) - {"path", "patch"}:
        raise KustomizeError(f"patch fields {sorted(set(patch))}: only path/patch (strategic merge) supported")
    if "path" in patch:
        path = (directory / patch["path"]).resolve()
        if directory.resolve() not in path.parents:
            raise KustomizeError(f"patch {path} is outside {directory} (kustomize refuses that)")
        return yaml.safe_load(path.read_text())
    return yaml.safe_load(patch["patch"])


def _apply_patch(docs: list[Manifest], patch: Manifest) -> list[Manifest]:
    name = patch["metadata"]["name"]
    matches = [d for d in docs if d["kind"] == patch["kind"] and d["metadata"]["name"] == name]
    if len(matches) != 1:
        raise KustomizeError(f"patch for {patch['kind']}/{name} matches {len(matches)} resources")
    target = matches[0]
    if patch.get("$patch") == "delete":
        return [d for d in docs if d is not target]
    merged = strategic_merge(target, patch)
    return [merged if d is target else d for d in docs]


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    """Strategic merge for the shapes k8s/ patches: maps merge, null deletes, keyed lists merge by key."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        mkey = MERGE_KEYS[field]
        out_list = copy.deepcopy(base)
        for item in patch:
            idx = next((i for i, b in enumerate(out_list) if b.get(mkey) == item.get(mkey)), None)
            if idx is None:
                out_list.append(copy.deepcopy(item))
            else:
                out_list[idx] = strategic_merge(out_list[idx], item)
        return out_list
    return copy.deepcopy(patch)


def iter_containers(node: Any) -> list[dict[str, Any]]:
    """Every container (and init container) anywhere in a manifest, custom resources included."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("containers", "initContainers") and isinstance(v, list):
                found.extend(v)
            else:
                found.extend(iter_containers(v))
    elif isinstance(node, list):
        for v in node:
            found.extend(iter_containers(v))
    return found


def pod_specs(node: Any) -> list[dict[str, Any]]:
    """Every pod spec (a dict holding ``containers``) in a manifest."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            found.append(node)
        for v in node.values():
            found.extend(pod_specs(v))
    elif isinstance(node, list):
        for v in node:
            found.extend(pod_specs(v))
    return found


def _set_image(container: dict[str, Any], image: dict[str, str]) -> None:
    current = container.get("image", "")
    name, _, tag = current.partition(":")
    if name != image["name"]:
        return
    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"


# ------------------------------------------------------------------------------------------------
# Metric definitions, read from the services' metrics.py without importing them.
METRIC_TYPES = {"Counter", "Gauge", "Histogram", "Summary"}


def metric_definitions(source: Path) -> dict[str, tuple[str, frozenset[str] | None]]:
    """``{name: (type, label names or None when not literal)}`` for every metric a module defines."""
    tree = ast.parse(source.read_text())
    out: dict[str, tuple[str, frozenset[str] | None]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        kind = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if kind not in METRIC_TYPES:
            continue
        kwargs = {kw.arg: kw.value for kw in node.keywords}
        name_node = node.args[0] if node.args else kwargs.get("name")
        if not (isinstance(name_node, ast.Constant) and isinstance(name_node.value, str)):
            continue
        labels_node = node.args[2] if len(node.args) > 2 else kwargs.get("labelnames")
        labels: frozenset[str] | None = frozenset()
        if labels_node is not None:
            if isinstance(labels_node, ast.List | ast.Tuple) and all(
                isinstance(e, ast.Constant) for e in labels_node.elts
            ):
                labels = frozenset(str(e.value) for e in labels_node.elts)  # type: ignore[attr-defined]
            else:
                labels = None
        out[name_node.value] = (kind, labels)
    return out


def exposed_series(definitions: dict[str, tuple[str, frozenset[str] | None]]) -> dict[str, str]:
    """Series names Prometheus will see (``_total``, ``_bucket``, ...) mapped to their metric."""
    series: dict[str, str] = {}
    for name, (kind, _) in definitions.items():
        base = name.removesuffix("_total") if kind == "Counter" else name
        if kind == "Counter":
            series[f"{base}_total"] = name
        elif kind == "Gauge":
            series[name] = name
        else:
            for suffix in ("_sum", "_count") + (("_bucket",) if kind == "Histogram" else ()):
                series[name + suffix] = name
    return series


SERIES_RE = re.compile(r"\b(mamdr_[a-z0-9_]+)\s*(\{[^}]*\})?")
BY_RE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHER_RE = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def query_series(expr: str) -> list[tuple[str, set[str]]]:
    """Each mamdr series a PromQL expression reads, with the label names its selector matches on."""
    return [(m.group(1), set(MATCHER_RE.findall(m.group(2) or ""))) for m in SERIES_RE.finditer(expr)]


def grouping_labels(expr: str) -> set[str]:
    return {lab.strip() for group in BY_RE.findall(expr) for lab in group.split(",") if lab.strip()}


# ------------------------------------------------------------------------------------------------
# Kubernetes schemas from kubernetes-validate, loaded once per (version, kind) instead of once per manifest.


@cache
def _k8s_validator(version: str, api_version: str, kind: str) -> jsonschema.Validator:
    import kubernetes_validate
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    resolved = [v for v in utils.all_versions() if utils.major_minor(v) <= version][-1]
    folder = f"kubernetes-json-schema/v{resolved}-local-strict"
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = utils.schema_contents(f"{folder}/{kind.lower()}-{group}.json", version)
    except FileNotFoundError:
        raise kubernetes_validate.SchemaNotFoundError(kind=kind, version=version, api_version=api_version) from None
    definitions = utils.schema_contents(f"{folder}/_definitions.json", version)
    registry: Registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def k8s_errors(doc: Manifest, version: str) -> list[str]:
    """Strict (unknown fields fail) schema errors of one core manifest for a Kubernetes minor version."""
    validator = _k8s_validator(version, doc["apiVersion"], doc["kind"])
    return [f"{'.'.join(str(p) for p in e.path)}: {e.message}" for e in validator.iter_errors(doc)]
