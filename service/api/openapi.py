"""The OpenAPI schema, completed with what FastAPI does not infer from the routes.

- Every uploaded file is an image: each file field of a multipart body gets the accepted
  image media types as its ``encoding`` ``contentType``, and its size limit.
- A form field is sent or left out; it cannot be ``null``, and an empty value counts as
  left out: optional form fields are documented without the ``null`` FastAPI gives
  them, and with the empty string.
- Bounds known only at run time are written in, so that what the schema accepts is what
  the service accepts: ``top_k`` up to ``LRFR_MAX_TOP_K``, at most
  ``LRFR_MAX_FILES_PER_REQUEST`` files in a field, ``far`` among the served model's
  calibrated false-accept rates.
- Links say where the ids an answer carries can be used next (a created gallery's
  name in its paths, an enrolled face's id in its deletion), for clients and stateful
  testers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from models.artifact import THRESHOLD_FARS
from service.settings import Settings

#: The formats ``service.images`` decodes, as media types.
IMAGE_MEDIA_TYPES = (
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/bmp",
    "image/x-portable-graymap",
    "image/x-portable-pixmap",
)


@dataclass(frozen=True)
class _Bounds:
    settings: Settings
    fars: tuple[str, ...]


#: Form fields whose bounds are known at run time.
_RUNTIME_BOUNDS: dict[str, Callable[[_Bounds], dict[str, Any]]] = {
    "top_k": lambda bounds: {"maximum": bounds.settings.max_top_k},
    "far": lambda bounds: {"enum": list(bounds.fars)},
}


_GALLERY = "/v1/galleries/{gallery}"
_SUBJECT = "/v1/galleries/{gallery}/subjects/{subject}"
_FROM_PATH = {"gallery": "$request.path.gallery", "subject": "$request.path.subject"}
_NEW_GALLERY = {"gallery": "$response.body#/name"}
_NEW_SUBJECT = {"gallery": "$request.path.gallery", "subject": "$response.body#/id"}

#: (operation answering 201, [(operation using its ids, parameters)]): the links.
_LINKS: list[tuple[tuple[str, str], list[tuple[tuple[str, str], dict[str, str]]]]] = [
    (
        ("post", "/v1/galleries"),
        [
            (("get", _GALLERY), _NEW_GALLERY),
            (("delete", _GALLERY), _NEW_GALLERY),
            (("post", f"{_GALLERY}/reembed"), _NEW_GALLERY),
            (("post", f"{_GALLERY}/subjects"), _NEW_GALLERY),
            (("get", f"{_GALLERY}/subjects"), _NEW_GALLERY),
        ],
    ),
    (
        ("post", f"{_GALLERY}/subjects"),
        [
            (("get", _SUBJECT), _NEW_SUBJECT),
            (("delete", _SUBJECT), _NEW_SUBJECT),
            (("post", f"{_SUBJECT}/faces"), _NEW_SUBJECT),
        ],
    ),
    (
        ("post", f"{_SUBJECT}/faces"),
        [
            (
                ("delete", f"{_SUBJECT}/faces/{{face}}"),
                {**_FROM_PATH, "face": "$response.body#/faces/0/id"},
            ),
            (
                ("get", f"{_SUBJECT}/faces/{{face}}/image"),
                {**_FROM_PATH, "face": "$response.body#/faces/0/id"},
            ),
        ],
    ),
]


def install_openapi(app: FastAPI) -> None:
    """Makes ``app.openapi`` return FastAPI's schema completed as this module says.

    The schema is cached once the model is loaded (its FARs are part of it); before
    that it is built on each call with every FAR the artifact format knows.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        service = getattr(app.state, "recognition", None)
        fars = tuple(service.rule.fars) if service is not None else THRESHOLD_FARS
        schema = generate()
        app.openapi_schema = None  # FastAPI caches it; the completed one is cached below
        complete_schema(schema, _Bounds(app.state.settings, fars))
        if service is not None:
            app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete_schema(schema: dict[str, Any], bounds: _Bounds) -> None:
    """Adds upload media types, run-time bounds and links to ``schema``, in place."""
    _add_links(schema)
    components = schema.get("components", {}).get("schemas", {})
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            form = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data")
            if form is None:
                continue
            body = _resolve(form["schema"], components)
            encoding = form.setdefault("encoding", {})
            required = set(body.get("required", []))
            for name, prop in body.get("properties", {}).items():
                _drop_null(prop)
                if _is_file(prop) or (prop.get("type") == "array" and _is_file(prop["items"])):
                    encoding[name] = {"contentType": ", ".join(IMAGE_MEDIA_TYPES)}
                    _describe_file(prop, bounds.settings)
                    continue
                if name in _RUNTIME_BOUNDS:
                    prop.update(_RUNTIME_BOUNDS[name](bounds))
                if name not in required:
                    _allow_empty(prop)


def _add_links(schema: dict[str, Any]) -> None:
    paths = schema.get("paths", {})

    def operation(method: str, path: str) -> dict[str, Any] | None:
        return paths.get(path, {}).get(method)

    for (method, path), targets in _LINKS:
        source = operation(method, path)
        if source is None or "201" not in source["responses"]:
            continue
        links = source["responses"]["201"].setdefault("links", {})
        for (target_method, target_path), parameters in targets:
            target = operation(target_method, target_path)
            if target is not None:
                links[target["operationId"]] = {
                    "operationId": target["operationId"],
                    "parameters": parameters,
                }


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return components[ref.rsplit("/", 1)[-1]] if ref else schema


def _drop_null(prop: dict[str, Any]) -> None:
    variants = prop.get("anyOf")
    if not variants:
        return
    kept = [variant for variant in variants if variant != {"type": "null"}]
    if len(kept) == 1:
        del prop["anyOf"]
        prop.update(kept[0])
    else:
        prop["anyOf"] = kept


_ANNOTATIONS = ("title", "description", "default", "examples")


def _allow_empty(prop: dict[str, Any]) -> None:
    # FastAPI reads an empty optional form field as absent: "" is as good as leaving it out.
    annotations = {key: prop.pop(key) for key in _ANNOTATIONS if key in prop}
    value = dict(prop)
    prop.clear()
    prop.update(annotations)
    prop["anyOf"] = [value, {"type": "string", "maxLength": 0}]


def _is_file(prop: dict[str, Any]) -> bool:
    return prop.get("format") == "binary" or "contentMediaType" in prop


def _describe_file(prop: dict[str, Any], settings: Settings) -> None:
    limit = (
        f"An image ({', '.join(IMAGE_MEDIA_TYPES)}) of at most {settings.max_upload_bytes} "
        "bytes (LRFR_MAX_UPLOAD_BYTES)"
    )
    if prop.get("type") == "array":
        prop["maxItems"] = settings.max_files_per_request
        limit += f"; at most {settings.max_files_per_request} files (LRFR_MAX_FILES_PER_REQUEST)"
    described = prop.get("description")
    prop["description"] = f"{described} {limit}." if described else f"{limit}."
