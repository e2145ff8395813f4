"""Contract of the ``image`` job type: read one image under the storage root, apply an ordered
list of operations, write the result under the storage root.

Paths are relative to the storage root (``FQ_STORAGE_ROOT``); the worker refuses any that
would leave it. The output format is ``format`` if given, else the output file's extension,
else the input's own format (PNG when that is not one of the writable formats). Images larger
than ``FQ_IMAGE_MAX_PIXELS`` (read from the header, before any pixel is decoded) are refused,
and so is any operation that would produce one.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ferrisqueue.jobtypes import JobType

ImageFormat = Literal["JPEG", "PNG", "WEBP", "GIF"]
"""Formats an image job can write."""

EXTENSIONS: dict[str, ImageFormat] = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".gif": "GIF",
}
"""Output file extensions and the format each implies."""

DEFAULT_EXTENSION: dict[str, str] = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}
"""The extension of a derived output path (``images/<job_id>.<ext>``), by format."""

LOSSY_FORMATS = frozenset({"JPEG", "WEBP"})
"""Formats that take a ``quality``."""

MAX_SIDE = 65_535
"""No format we write stores a wider or taller image."""

Side = Annotated[int, Field(ge=1, le=MAX_SIDE)]


class Resize(BaseModel):
    """Scale to ``width`` x ``height``: with ``keep_aspect``, the largest size that fits
    inside that box with the original proportions (enlarging if need be); without, exactly."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["resize"]
    width: Side = Field(description="Target width in pixels (the box width with keep_aspect).")
    height: Side = Field(description="Target height in pixels (the box height with keep_aspect).")
    keep_aspect: bool = Field(
        default=True, description="Fit inside width x height keeping proportions."
    )


class Thumbnail(BaseModel):
    """Shrink (never enlarge) to fit inside ``max_width`` x ``max_height``, keeping proportions."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["thumbnail"]
    max_width: Side = Field(description="Largest width of the result.")
    max_height: Side = Field(description="Largest height of the result.")


class Crop(BaseModel):
    """Keep the box from (``left``, ``top``) inclusive to (``right``, ``bottom``) exclusive; the
    box must lie inside the image."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["crop"]
    left: int = Field(ge=0, le=MAX_SIDE, description="First column kept.")
    top: int = Field(ge=0, le=MAX_SIDE, description="First row kept.")
    right: int = Field(ge=1, le=MAX_SIDE, description="Column after the last one kept.")
    bottom: int = Field(ge=1, le=MAX_SIDE, description="Row after the last one kept.")

    @model_validator(mode="after")
    def _box_not_empty(self) -> Crop:
        if self.right <= self.left:
            raise ValueError(f"crop needs right > left (got left={self.left}, right={self.right})")
        if self.bottom <= self.top:
            raise ValueError(f"crop needs bottom > top (got top={self.top}, bottom={self.bottom})")
        return self


class Convert(BaseModel):
    """Change the pixel mode, e.g. to greyscale (``L``) or to drop alpha (``RGB``)."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["convert"]
    mode: Literal["1", "L", "LA", "P", "RGB", "RGBA", "CMYK"] = Field(
        default="RGB", description="Pillow image mode to convert to."
    )


Operation = Annotated[Resize | Thumbnail | Crop | Convert, Field(discriminator="op")]


class ImagePayload(BaseModel):
    """What to read, what to do to it (in order), and how to write it."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1, description="Image to read, relative to the storage root.")
    output: str | None = Field(
        default=None,
        min_length=1,
        description="Where to write, relative to the storage root. Default: "
        "images/<job_id>.<ext>, so a re-run overwrites its own output. Must differ from input.",
    )
    operations: list[Operation] = Field(
        default_factory=list,
        max_length=100,
        description="Applied in order. Empty: only re-encode (and strip metadata).",
    )
    format: ImageFormat | None = Field(
        default=None,
        description="Output format. Default: from the output extension, else the input's.",
    )
    quality: int | None = Field(
        default=None, ge=1, le=100, description="Encoder quality, JPEG and WEBP only."
    )
    strip_metadata: bool = Field(
        default=True,
        description="Write pixels only: no EXIF, ICC profile or XMP from the input.",
    )

    @model_validator(mode="after")
    def _format_is_known(self) -> ImagePayload:
        declared = self.declared_format()
        if self.format is None and self.output is not None and declared is None:
            known = ", ".join(sorted(EXTENSIONS))
            raise ValueError(
                f"cannot tell the format of {self.output!r}: give format or use one of {known}"
            )
        if self.quality is not None and declared is not None and declared not in LOSSY_FORMATS:
            raise ValueError(f"quality applies to JPEG and WEBP only, not {declared}")
        return self

    def declared_format(self) -> ImageFormat | None:
        """The output format the payload determines, if it does (else the input's decides)."""
        if self.format is not None:
            return self.format
        if self.output is not None:
            return EXTENSIONS.get(PurePosixPath(self.output).suffix.lower())
        return None


class ImageResult(BaseModel):
    """The written image."""

    model_config = ConfigDict(extra="forbid")

    output: str = Field(description="The written file, relative to the storage root.")
    width: int = Field(description="Width of the written image in pixels.")
    height: int = Field(description="Height of the written image in pixels.")
    format: ImageFormat = Field(description="Format the image was written in.")
    bytes: int = Field(description="Size of the written file.")


JOB_TYPE = JobType(
    name="image",
    description="Resize, thumbnail, crop or convert an image under the storage root (Pillow), "
    "stripping metadata by default; refuses paths outside the root and oversized images.",
    payload=ImagePayload,
    result=ImageResult,
)
