"""Path and form parameters shared by the routes: ids with their pattern and length.

Gallery names and subject ids are validated once, here, on every path and form field that
carries one: NUL and control characters, slashes and over-long ids are a 422 before any
database sees them (PostgreSQL refuses NUL in text with an error, SQLite stores it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Form, Path

from service.schemas import NAME_PATTERN

#: Longest gallery name or subject id (NAME_PATTERN says the same).
NAME_MAX_LENGTH = 128
#: Database integers are signed 64-bit: larger ids and offsets are refused (422), not a 500.
INT64_MAX = 2**63 - 1

_NAME_RULE = (
    f"letters, digits, '.', '_' and '-', starting with a letter or digit, "
    f"at most {NAME_MAX_LENGTH} characters"
)


def _name_param(place: Callable[..., Any], description: str, example: str) -> Any:
    """A ``Path`` or ``Form`` parameter that carries a gallery name or subject id."""
    return place(
        pattern=NAME_PATTERN,
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        description=f"{description}: {_NAME_RULE}.",
        examples=[example],
    )


GalleryName = Annotated[str, _name_param(Path, "The gallery's name", "staff")]
SubjectId = Annotated[str, _name_param(Path, "The subject's id in its gallery", "s3")]
FaceId = Annotated[
    int, Path(ge=1, le=INT64_MAX, description="A face id, as assigned by the service.")
]
GalleryField = Annotated[str, _name_param(Form, "The gallery's name", "staff")]
FaceField = Annotated[
    Literal["auto", "aligned", "box"] | None,
    Form(
        description="How to read the image: 'auto' detects faces and aligns the largest "
        "by its landmarks (a small image without a detection is taken as a box); "
        "'aligned': already a template crop; 'box': a detector's box around one face. "
        "Default: LRFR_DEFAULT_FACE ('auto').",
    ),
]
FaceIndexField = Annotated[
    int | None,
    Form(
        ge=0, le=1000,
        description="With face=auto: which detected face to use, 0 = the largest.",
    ),
]
