"""Schemathesis hooks for the service's schema test (loaded through ``SCHEMATHESIS_HOOKS``).

The schema says every upload is an image (its ``encoding`` ``contentType``), which JSON
Schema cannot generate: these hooks register small PNG and JPEG strategies for those
media types, and fix two things Schemathesis does with file fields:

- in the examples phase it sends an empty file (the schema has no example image);
- it fills an array of files from a media-type strategy with one bare value, which it
  then sends without a filename, as a text field: OpenAPI applies an array's encoding
  to each item, so the hook makes it a list of one file;
- in the coverage phase, a positive multipart body with an image part gets "" for every
  other required field, whatever its schema (``gallery`` must match a pattern): the
  hook puts the field's example there instead;
- a negative case may give a form field an empty list, which goes out as no part at
  all, a valid request: such cases are dropped.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image


def _image(fmt: str, width: int, height: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _images(fmt: str) -> st.SearchStrategy[bytes]:
    return st.builds(
        _image, st.just(fmt), st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**16)
    )


schemathesis.openapi.media_type("image/png", _images("PNG"))
schemathesis.openapi.media_type("image/jpeg", _images("JPEG"))

_EXAMPLE_IMAGE = _image("PNG", 24, 28, 0)


def _form(case: schemathesis.Case) -> tuple[dict[str, Any], dict[str, Any]]:
    """The operation's multipart media type object and its (resolved) body schema."""
    raw = case.operation.definition.raw
    form = raw.get("requestBody", {}).get("content", {}).get("multipart/form-data", {})
    ref = form.get("schema", {}).get("$ref", "")
    components = case.operation.schema.raw_schema.get("components", {}).get("schemas", {})
    return form, components.get(ref.rsplit("/", 1)[-1], {})


def _file_fields(case: schemathesis.Case) -> dict[str, bool]:
    """The operation's image fields (those with an encoding), each with whether it is an
    array of files."""
    form, body = _form(case)
    properties = body.get("properties", {})
    return {
        name: properties.get(name, {}).get("type") == "array" for name in form.get("encoding", {})
    }


@schemathesis.hook
def map_case(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    if isinstance(case.body, dict):
        for name, many in _file_fields(case).items():
            if many and isinstance(case.body.get(name), bytes):
                case.body[name] = [case.body[name]]
    return case


@schemathesis.hook
def before_add_examples(
    context: schemathesis.HookContext, examples: list[schemathesis.Case]
) -> None:
    for case in examples:
        if not isinstance(case.body, dict):
            continue
        for name, many in _file_fields(case).items():
            if name in case.body and not case.body[name]:
                case.body[name] = [_EXAMPLE_IMAGE] if many else _EXAMPLE_IMAGE
        map_case(context, case)


@schemathesis.hook
def before_call(
    context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]
) -> None:
    if not isinstance(case.body, dict) or case.meta is None:
        return
    if case.meta.generation.mode is not schemathesis.GenerationMode.POSITIVE:
        return
    _, body = _form(case)
    for name in body.get("required", []):
        examples = body.get("properties", {}).get(name, {}).get("examples")
        if case.body.get(name) == "" and examples:
            case.body[name] = examples[0]


@schemathesis.hook
def filter_case(context: schemathesis.HookContext, case: schemathesis.Case) -> bool:
    return not (
        case.media_type == "multipart/form-data"
        and isinstance(case.body, dict)
        and any(value == [] for value in case.body.values())
    )
