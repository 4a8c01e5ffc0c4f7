"""The registry's HTTP admin API as a client with the backend's methods, so ``mamdr domains ... --api URL``
runs the same commands against a running service: operators need the admin token, not database credentials.

Stdlib only (urllib): the CLI works from the serving image. HTTP errors come back as the platform's own error
classes (:func:`contracts.errors.error_for_status`), so the output and exit codes match the direct mode.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from contracts.errors import BackendUnavailable, ConfigError, MamdrError, NotFound, error_for_status
from domain_registry.base import Domain, ModelVersion


class ApiRegistry:
    """What the registry commands call, over ``{base}/v1/...`` with ``Authorization: Bearer <token>``."""

    def __init__(self, base_url: str, token: str, timeout_s: float = 30.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"--api {base_url!r}: write the service's URL, e.g. http://127.0.0.1:8000")
        if not token:
            raise ConfigError("--api needs the admin token: set MAMDR_REGISTRY__ADMIN_TOKEN or pass --token-file")
        self.base = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout_s

    def __enter__(self) -> ApiRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
              query: dict[str, Any] | None = None) -> Any:
        url = f"{self.base}/v1{path}"
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self._token}", "Content-Type": "application/json",
            "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                payload = json.loads(exc.read() or b"{}")
            except ValueError:
                payload = {}
            raise error_for_status(exc.code, str(payload.get("error", "")),
                                   str(payload.get("detail", exc.reason))) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendUnavailable(f"the admin API at {self.base} is not reachable ({reason})") from None

    def create_domain(self, domain_id: str, *, display_name: str | None = None,
                      settings: dict[str, Any] | None = None, actor: str = "") -> Domain:
        body = {"id": domain_id, "display_name": display_name, "settings": settings or None}
        return Domain.model_validate(self._call("POST", "/domains", {k: v for k, v in body.items() if v}))

    def list_domains(self, status: str | None = None) -> list[Domain]:
        return [Domain.model_validate(d) for d in self._call("GET", "/domains", query={"status": status})["domains"]]

    def get_domain(self, domain_id: str) -> Domain:
        return Domain.model_validate(self._call("GET", f"/domains/{urllib.parse.quote(domain_id)}"))

    def update_domain(self, domain_id: str, *, status: str, actor: str = "") -> Domain:
        path = f"/domains/{urllib.parse.quote(domain_id)}"
        if status == "retired":
            return Domain.model_validate(self._call("DELETE", path))
        return Domain.model_validate(self._call("PATCH", path, {"status": status}))

    def list_models(self, limit: int = 100) -> list[ModelVersion]:
        return [ModelVersion.model_validate(m) for m in self._call("GET", "/models", query={"limit": limit})["models"]]

    def get_model(self, version: str) -> ModelVersion:
        for model in self.list_models(1000):
            if model.id == version:
                return model
        raise NotFound(f"model version {version!r} is not registered")

    def promote(self, version: str) -> ModelVersion:
        return ModelVersion.model_validate(self._call("POST", f"/models/{urllib.parse.quote(version)}/promote"))

    def rollback(self) -> ModelVersion:
        return ModelVersion.model_validate(self._call("POST", "/models/rollback"))


__all__ = ["ApiRegistry", "MamdrError"]
