"""KServe Open Inference Protocol v2 (the REST protocol Triton and KServe speak), one model per domain.

Routes: ``GET /v2`` (server metadata), ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{domain}``
(model metadata), ``/v2/models/{domain}/ready`` and ``POST /v2/models/{domain}/infer``, and the same three
under ``/v2/models/{domain}/versions/{version}`` for a published version other than the live one (also
``parameters.model_version`` or the ``X-Model-Version`` header; see :mod:`serving.versions`). Infer takes BYTES
inputs ``user_id`` (shape [1]) or ``user_ids`` (shape [B], a batch of users) and ``item_ids`` (shape [N]:
the same candidates for every user, or [B, N]: each user's own), and returns the FP32 output ``scores``
([N] for ``user_id``, [B, N] for ``user_ids``, rows in the order of the users). Scoring is the per-domain
endpoint's (``serving.scoring`` through the batcher); errors are ``contracts.http``'s in the v2 shape
``{"error": "<code>: <reason>"}`` (bad input 422, unknown model 404, retired 410, not ready 503).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts.errors import DataError, MamdrError
from contracts.http import COMMON_ERRORS, V2_PREFIX, DirectRoute, MappedRoute, v2_error_responses
from serving.batching import Batcher
from serving.errors import ModelNotReady
from serving.live import LiveModel
from serving.metrics import MIXED_VERSIONS
from serving.reload import ServingState
from serving.schemas import parse_json
from serving.scoring import Job
from serving.versions import VERSION_HEADER, VERSION_HEADER_DOC, model_for, requested_version

PLATFORM = "onnxruntime_onnx"
USER_ID, USER_IDS, ITEM_IDS, SCORES = "user_id", "user_ids", "item_ids", "scores"
_JSON = "application/json"
_MAX_ID = 256  # as contracts.events.EntityId


class InvalidInferRequest(DataError):
    """A v2 infer body that parses but does not say what to score (422, with the reason)."""

    code = "invalid_request"


class V2Tensor(BaseModel):
    """One input tensor: ``data`` flat (row-major) or nested as ``shape`` says."""

    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int] = Field(max_length=8)
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] | None = None


class V2RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, Any] | None = None


class V2InferRequest(BaseModel):
    """``POST /v2/models/{domain}/infer`` body (the tritonclient JSON body)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "id": "r1", "inputs": [
            {"name": USER_ID, "shape": [1], "datatype": "BYTES", "data": ["u42"]},
            {"name": ITEM_IDS, "shape": [3], "datatype": "BYTES", "data": ["i1", "i7", "i9"]}],
        "outputs": [{"name": SCORES}]}]})

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2Tensor] = Field(min_length=1, max_length=4)
    outputs: list[V2RequestedOutput] | None = None


class V2Output(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class V2InferResponse(BaseModel):
    """Scores in the order of the users and items asked; ``parameters`` carries what the v1 body says
    besides the scores (cold ids, degraded)."""

    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    outputs: list[V2Output]


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2Ready(BaseModel):
    ready: bool


class V2ModelReady(BaseModel):
    name: str
    ready: bool


class V2Live(BaseModel):
    live: bool


def _flat(data: list[Any]) -> list[Any]:
    """Row-major values of flat or nested ``data``."""
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            out.append(value)
        else:
            stack.pop()
    return out


def _ids(tensor: V2Tensor) -> list[str]:
    """A BYTES tensor's strings, checked against its shape.

    Flat ``data`` (what clients send) is checked without a Python loop over the ids (``map(type)``,
    ``map(len)`` run in C; this runs on the event loop for every request); nested ``data`` is flattened first.
    """
    if tensor.datatype != "BYTES":
        raise InvalidInferRequest(f"input {tensor.name!r} has datatype {tensor.datatype}; ids are BYTES")
    values = tensor.data
    kinds = set(map(type, values))
    if list in kinds:
        values = _flat(values)
        kinds = set(map(type, values))
    size = 1
    for dim in tensor.shape:
        if dim < 0:
            raise InvalidInferRequest(f"input {tensor.name!r} has a negative dimension in shape {tensor.shape}")
        size *= dim
    if size != len(values):
        raise InvalidInferRequest(f"input {tensor.name!r} has shape {tensor.shape} ({size} values) but "
                                  f"{len(values)} values in data")
    if values and (kinds != {str} or not 0 < min(map(len, values)) <= max(map(len, values)) <= _MAX_ID):
        bad = next(v for v in values if not isinstance(v, str) or not 0 < len(v) <= _MAX_ID)
        raise InvalidInferRequest(f"input {tensor.name!r} holds {bad!r}; ids are strings of 1 to "
                                  f"{_MAX_ID} characters")
    return values


def jobs_of(domain: str, body: V2InferRequest, max_users: int) -> tuple[list[Job], bool]:
    """The request's jobs (one per user, in order) and whether it was a batch (``user_ids``)."""
    tensors: dict[str, V2Tensor] = {}
    for tensor in body.inputs:
        if tensor.name not in (USER_ID, USER_IDS, ITEM_IDS):
            raise InvalidInferRequest(f"unknown input {tensor.name!r}; inputs are {USER_ID} or {USER_IDS}, "
                                      f"and {ITEM_IDS}")
        if tensor.name in tensors:
            raise InvalidInferRequest(f"input {tensor.name!r} is given twice")
        tensors[tensor.name] = tensor
    for wanted in body.outputs or ():
        if wanted.name != SCORES:
            raise InvalidInferRequest(f"unknown output {wanted.name!r}; the only output is {SCORES!r}")
    if (USER_ID in tensors) == (USER_IDS in tensors):
        raise InvalidInferRequest(f"give exactly one of {USER_ID} (one user) or {USER_IDS} (a batch)")
    if ITEM_IDS not in tensors:
        raise InvalidInferRequest(f"input {ITEM_IDS} is required")
    batch = USER_IDS in tensors
    users_tensor = tensors[USER_IDS if batch else USER_ID]
    users = _ids(users_tensor)
    if not batch and users_tensor.shape not in ([1], [1, 1]):
        raise InvalidInferRequest(f"{USER_ID} has shape {users_tensor.shape}; one user is shape [1] "
                                  f"(send several as {USER_IDS})")
    if not users:
        raise InvalidInferRequest(f"{USER_IDS} is empty")
    if len(users) > max_users:
        raise InvalidInferRequest(f"{USER_IDS} has {len(users)} users; send at most {max_users} per request "
                                  "(serving.max_batch)")
    items_tensor = tensors[ITEM_IDS]
    items = _ids(items_tensor)
    shape = items_tensor.shape
    if len(shape) == 1 or (len(shape) == 2 and shape[0] == 1 and len(users) > 1):
        per_user = [items] * len(users)
    elif len(shape) == 2 and shape[0] == len(users):
        n = shape[1]
        per_user = [items[k * n:(k + 1) * n] for k in range(len(users))]
    else:
        raise InvalidInferRequest(f"{ITEM_IDS} has shape {shape}; use [N] (the same candidates for every user) "
                                  f"or [{len(users)}, N] (one row per user)")
    if not per_user[0]:
        raise InvalidInferRequest(f"{ITEM_IDS} is empty")
    return [Job(domain, user, row) for user, row in zip(users, per_user, strict=True)], batch


TAG = "v2 (KServe Open Inference Protocol)"


def add_v2_routes(app: FastAPI, state_of: Callable[[Request], ServingState], batcher_of: Callable[[Request], Batcher],
                  count: Callable[[Request, str, int, float | None, bool], None]) -> None:
    """Add the v2 routes to ``app``; ``count(request, domain, status, seconds, degraded)`` records a finished infer
    in the metrics (the same series as the per-domain endpoint).

    The two infer routes go on the app's own router, matched right after the per-domain endpoint; the rest is an
    included router. FastAPI (0.165) matches a request against an included router's every route, twice (to
    select, then to handle): for infer that was ~18% of the request's Python time in a profile, and the reason v2
    trailed /v1 at 64 connections (bench/bench_protocols.py; docs/serving.md).
    """
    router = APIRouter(prefix="/v2", tags=[TAG], route_class=MappedRoute, responses=v2_error_responses(*COMMON_ERRORS))

    async def model_of(request: Request, domain: str, version: str | None = None) -> LiveModel:
        """The model serving ``domain``: the live one, or ``version`` (404 unknown domain or version, 410 retired
        domain, 503 no model yet)."""
        state = state_of(request)
        state.domains.check(domain)
        live = state.live
        if live is None:
            raise ModelNotReady("no model version is loaded yet; publish and promote one (see /readyz)")
        if version is None:
            return live
        return await model_for(state, requested_version(version), "")

    @router.get("", response_model=V2ServerMetadata)
    async def server_metadata() -> V2ServerMetadata:
        """Server name, version and protocol extensions (none)."""
        return V2ServerMetadata(name="mamdr", version="1", extensions=[])

    @router.get("/health/live", response_model=V2Live)
    async def health_live() -> V2Live:
        """The process is up."""
        return V2Live(live=True)

    @router.get("/health/ready", response_model=V2Ready, responses={503: {"model": V2Ready}})
    async def health_ready(request: Request) -> Response:
        """200 once a verified model version is loaded (every registered domain is then servable)."""
        state = state_of(request)
        ready = state.live is not None and state.domains.lost is None
        return Response(V2Ready(ready=ready).model_dump_json(), status_code=200 if ready else 503, media_type=_JSON)

    def metadata(domain: str, versions: list[str]) -> V2ModelMetadata:
        return V2ModelMetadata(
            name=domain, versions=versions, platform=PLATFORM,
            inputs=[V2TensorMetadata(name=USER_ID, datatype="BYTES", shape=[1]),
                    V2TensorMetadata(name=USER_IDS, datatype="BYTES", shape=[-1]),
                    V2TensorMetadata(name=ITEM_IDS, datatype="BYTES", shape=[-1, -1])],
            outputs=[V2TensorMetadata(name=SCORES, datatype="FP32", shape=[-1, -1])],
        )

    @router.get("/models/{domain}", response_model=V2ModelMetadata, responses=v2_error_responses(404, 410))
    async def model_metadata(domain: str, request: Request) -> V2ModelMetadata:
        """Metadata of the model serving ``domain``: its inputs and output; ``versions``: the live version first,
        then the versions held beside it (pinned, canary)."""
        live = await model_of(request, domain)
        held = [v for v in state_of(request).versions.held() if v != live.version]
        return metadata(domain, [live.version, *held])

    @router.get("/models/{domain}/versions/{version}", response_model=V2ModelMetadata,
                responses=v2_error_responses(404, 410))
    async def version_metadata(domain: str, version: str, request: Request) -> V2ModelMetadata:
        """Metadata of ``domain`` in a published ``version`` (loaded if it is not held; 404 if it cannot be)."""
        return metadata(domain, [(await model_of(request, domain, version)).version])

    @router.get("/models/{domain}/ready", response_model=V2ModelReady, responses=v2_error_responses(404, 410))
    async def model_ready(domain: str, request: Request) -> V2ModelReady:
        """200 when ``domain`` can be scored now (404 unknown, 410 retired, 503 no model yet)."""
        await model_of(request, domain)
        return V2ModelReady(name=domain, ready=True)

    @router.get("/models/{domain}/versions/{version}/ready", response_model=V2ModelReady,
                responses=v2_error_responses(404, 410))
    async def version_ready(domain: str, version: str, request: Request) -> V2ModelReady:
        """200 when ``domain`` can be scored now with ``version`` (404 unknown domain or version)."""
        await model_of(request, domain, version)
        return V2ModelReady(name=domain, ready=True)

    async def infer(domain: str, request: Request) -> Response:
        """Scores of ``item_ids`` for ``user_id`` (or for each of ``user_ids``) in ``domain``."""
        return await run_infer(domain, request, None)

    async def run_infer(domain: str, request: Request, version: str | None) -> Response:
        started = time.perf_counter()
        batcher = batcher_of(request)
        batcher.entered += 1
        try:
            raw = await request.body()
            try:
                body = V2InferRequest.model_validate(parse_json(raw))
            except ValidationError as exc:
                raise InvalidInferRequest(_first_problem(exc)) from None
            except ValueError as exc:
                raise InvalidInferRequest(f"body: invalid JSON ({exc})") from None
            state = state_of(request)
            jobs, batch = jobs_of(domain, body, state.settings.serving.max_batch)
        finally:
            batcher.entered -= 1
        named = (body.parameters or {}).get("model_version")
        if named is not None and not isinstance(named, str):
            raise InvalidInferRequest("parameters.model_version must be a string (a published version id)")
        pinned = requested_version(version, named, request.headers.get(VERSION_HEADER))
        models = [await model_for(state, pinned, job.user_id) for job in jobs]  # a canary slices by user
        request.state.model_version = models[0].version if len(set(map(id, models))) == 1 else MIXED_VERSIONS
        results = await _score_by_model(batcher, jobs, models)
        for result in results:
            if isinstance(result, MamdrError):
                raise result
        scored = [r for r in results if not isinstance(r, MamdrError)]
        n = len(jobs[0].item_ids)
        data = [s for r in scored for s in r.scores]
        degraded = any(r.degraded for r in scored)
        parameters: dict[str, Any] = {
            "cold_users": [j.user_id for j, r in zip(jobs, scored, strict=True) if r.cold_user],
            "cold_items": sorted({i for r in scored for i in r.cold_items}), "degraded": degraded}
        row_versions = [r.model_version for r in scored]
        if len(set(row_versions)) > 1:  # a canary took some of the users: each row says which version scored it
            parameters["model_versions"] = row_versions
        # V2InferResponse's shape, serialized straight from Python values: building the model validates every
        # score again (they were validated once, in the CTRResponse of each row) and costs ~2x orjson's dump
        response = {"model_name": domain, "model_version": scored[0].model_version, "id": body.id,
                    "parameters": parameters, "outputs": [{"name": SCORES, "shape": [len(jobs), n] if batch else [n],
                                                           "datatype": "FP32", "data": data}]}
        count(request, domain, 200, time.perf_counter() - started, degraded)
        return Response(orjson.dumps(response), media_type=_JSON)

    async def infer_version(domain: str, version: str, request: Request) -> Response:
        """Scores as ``/infer`` gives them, from the published ``version`` (404 if it cannot be served)."""
        return await run_infer(domain, request, version)

    body_schema = {"requestBody": {"required": True,
                                   "content": {_JSON: {"schema": V2InferRequest.model_json_schema()}}},
                   "parameters": [VERSION_HEADER_DOC]}
    for path, endpoint in (("/models/{domain}/infer", infer),
                           ("/models/{domain}/versions/{version}/infer", infer_version)):
        app.router.add_api_route(V2_PREFIX + path, endpoint, methods=["POST"], response_model=V2InferResponse,
                                 tags=[TAG], responses=v2_error_responses(*COMMON_ERRORS, 404, 410),
                                 route_class_override=DirectRoute, openapi_extra=body_schema)
    app.include_router(router)


async def _score_by_model(batcher: Batcher, jobs: list[Job], models: list[LiveModel]) -> list[Any]:
    """Each model's jobs through the batcher (concurrently), results back in job order."""
    groups: dict[int, list[int]] = {}
    for k, model in enumerate(models):
        groups.setdefault(id(model), []).append(k)
    if len(groups) == 1:
        return await batcher.score(jobs, models[0])
    parts = await asyncio.gather(*(batcher.score([jobs[k] for k in ks], models[ks[0]]) for ks in groups.values()))
    results: list[Any] = [None] * len(jobs)
    for ks, part in zip(groups.values(), parts, strict=True):
        for k, result in zip(ks, part, strict=True):
            results[k] = result
    return results


def _first_problem(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = ".".join(str(p) for p in first.get("loc", ())) or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc}: {first.get('msg', 'invalid')}{more}"

