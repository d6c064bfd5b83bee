"""What the server's OpenAPI document says about authentication and storage: what this
server, with these settings, does (a schema fuzzer holds the server to it).

FastAPI declares the bearer scheme on every route that takes the token dependency, whether
or not the server has a token. Here an operation declares `security` (and documents 401 and
403) only when this server demands the token for it: a token is set, and the operation
writes, or SIQ_PROTECT_READS guards reads (then /metrics too, which the front door guards).
With no token, the document has no security scheme at all. Every operation that writes
documents 507 (a full disk, api/errors.py).

The `dataset` of a request body is an enum of the data sets this server has now, and its
`network` one of the networks uploaded (POST /networks), or null while there are none
(`server.data.dataset_names`, what the route checks), so a name the document offers is one
the server takes. Data sets come and go while the server runs (a folder in SIQ_DATA_DIR, an
upload), so that list is filled in on every request for the document; the rest is built
once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from server.service.api.errors import ERROR_RESPONSES, STORAGE_RESPONSES
from server.service.guard import OPEN_PATHS, PROTECTED_READ_PATHS
from server.service.settings import ServerSettings

__all__ = ["install_openapi"]

SCHEME = "HTTPBearer"
_READS = frozenset({"get", "head", "options"})
_AUTH_STATUSES = ("401", "403")


def install_openapi(
    app: FastAPI,
    settings: ServerSettings,
    datasets: Callable[[], list[str]],
    networks: Callable[[], list[str]] = list,
) -> None:
    """Make `app.openapi()` answer the document for `settings`, its request bodies'
    `dataset` listing `datasets()` and `network` listing `networks()` as they are at the
    time of the request."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = describe_auth(doc, settings)
        doc = list_datasets(copy.deepcopy(app.openapi_schema), datasets())
        return list_networks(doc, networks())

    app.openapi = openapi  # type: ignore[method-assign]


def list_datasets(doc: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """`doc` with the `dataset` of every JSON request body an enum of `names`."""
    schemas = doc.get("components", {}).get("schemas", {})
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            content = operation.get("requestBody", {}).get("content", {})
            ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
            body = schemas.get(ref.rpartition("/")[2], {})
            prop = body.get("properties", {}).get("dataset")
            if prop is not None:
                keep = {k: prop[k] for k in ("title", "description") if k in prop}
                body["properties"]["dataset"] = {"type": "string", "enum": names, **keep}
    return doc


def list_networks(doc: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """`doc` with the optional `network` of every JSON request body an enum of `names` (or
    null only, while the server has none)."""
    for body in _json_bodies(doc):
        prop = body.get("properties", {}).get("network")
        if prop is not None:
            keep = {k: prop[k] for k in ("title", "description", "default") if k in prop}
            named = [{"type": "string", "enum": names}] if names else []
            body["properties"]["network"] = {"anyOf": [*named, {"type": "null"}], **keep}
    return doc


def _json_bodies(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The schemas of the document's JSON request bodies."""
    schemas = doc.get("components", {}).get("schemas", {})
    out = []
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            content = operation.get("requestBody", {}).get("content", {})
            ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
            if ref.rpartition("/")[2] in schemas:
                out.append(schemas[ref.rpartition("/")[2]])
    return out


def describe_auth(doc: dict[str, Any], settings: ServerSettings) -> dict[str, Any]:
    """`doc` with security declared where this server checks the token, and 507 on writes."""
    storage = _documented(STORAGE_RESPONSES)
    auth = _documented({int(s): ERROR_RESPONSES[int(s)] for s in _AUTH_STATUSES})
    for path, operations in doc.get("paths", {}).items():
        for method, operation in operations.items():
            writes = method not in _READS
            if writes:
                operation["responses"].update(storage)
            declared = "security" in operation or path in PROTECTED_READ_PATHS
            if declared and path not in OPEN_PATHS and _demands_token(settings, writes):
                operation["security"] = [{SCHEME: []}]
                operation["responses"].update(auth)
                continue
            operation.pop("security", None)
            for status in _AUTH_STATUSES:
                operation["responses"].pop(status, None)
    if settings.api_token is None:
        schemes = doc.get("components", {}).get("securitySchemes", {})
        schemes.pop(SCHEME, None)
        if not schemes:
            doc.get("components", {}).pop("securitySchemes", None)
    return doc


def _demands_token(settings: ServerSettings, writes: bool) -> bool:
    return settings.api_token is not None and (writes or settings.protect_reads)


def _documented(responses: dict[int | str, dict[str, Any]]) -> dict[str, Any]:
    """ERROR_RESPONSES-style entries as OpenAPI response objects."""
    ref = {"$ref": "#/components/schemas/ErrorResponse"}
    return {
        str(status): {
            "description": entry["description"],
            "content": {"application/json": {"schema": ref}},
        }
        for status, entry in responses.items()
    }
