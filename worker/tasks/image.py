"""The ``image`` task: Pillow operations on a file under the storage root.

Guarantees, and why:

* **Only the storage root.** Both paths go through :func:`worker.storage.inside`.
* **No decompression bombs.** The pixel count comes from the header (``Image.open`` does not
  decode) and is checked against ``FQ_IMAGE_MAX_PIXELS`` before any pixel is decoded; each
  operation's output size is checked too, so a resize cannot build a bomb either. Pillow's own
  guard (``Image.MAX_IMAGE_PIXELS``, left as it is: it is process-wide) still applies, so the
  effective limit is the smaller of the two; its error, and its warning where warnings are
  errors, fail the job permanently like ours.
* **Only plain raster formats are read** (:data:`READABLE_FORMATS`): Pillow can open formats
  that run external programs (EPS runs Ghostscript), and a job queue should not.
* **Never blocks the event loop.** The handler is a plain ``def``: the registry runs it in a
  thread, and Pillow releases the GIL while it resamples, so lease heartbeats keep flowing
  and a job longer than AckWait is not delivered again.
* **Idempotent.** The output is written to a temporary file beside it and moved into place
  (``os.replace``), so a reader never sees half an image and a re-run overwrites cleanly; the
  default output path is named after the job id. Writing over the input is refused, because a
  re-run would then process its own output.
* **Viewer orientation.** The EXIF orientation is applied first, so crop boxes and sizes mean
  what a viewer shows (and stripping EXIF cannot leave a photo on its side).
* **Metadata.** ``strip_metadata`` (the default) writes a fresh image built from the pixel
  data alone (plus palette and transparency), so no EXIF, ICC profile, XMP or text chunk of
  the input survives; otherwise EXIF and the ICC profile are carried over where the format
  stores them. Animated images: the first frame only.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from ferrisqueue.errors import Permanent
from ferrisqueue.jobtypes.image import (
    DEFAULT_EXTENSION,
    LOSSY_FORMATS,
    Convert,
    Crop,
    ImageFormat,
    ImagePayload,
    ImageResult,
    Operation,
    Resize,
    Thumbnail,
)
from ferrisqueue.settings import Settings
from worker.context import JobContext
from worker.registry import TaskRegistry
from worker.storage import atomic_writer, inside

READABLE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
"""Input formats Pillow may open for an image job."""

WRITABLE_FORMATS: tuple[ImageFormat, ...] = ("JPEG", "PNG", "WEBP", "GIF")

SAVE_MODES: dict[str, frozenset[str]] = {
    "JPEG": frozenset({"1", "L", "RGB", "CMYK"}),
    "PNG": frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"}),
    "WEBP": frozenset({"RGB", "RGBA"}),
    # Pillow quantizes RGB(A) to a palette itself when it writes a GIF.
    "GIF": frozenset({"1", "L", "P", "RGB", "RGBA"}),
}
"""Pixel modes each format stores; others are converted (to RGB, or RGBA to keep alpha)."""


class ImageRefused(Permanent):
    """The input is not an image this task will decode, or is too large to."""


def register(registry: TaskRegistry, settings: Settings) -> None:
    """Register the handler of ``image`` jobs."""

    def image(ctx: JobContext, payload: ImagePayload) -> ImageResult:
        """Run ``payload.operations`` on the input image and write the output (in a thread)."""
        return process_image(
            payload,
            root=settings.effective_storage_root,
            max_pixels=settings.image_max_pixels,
            job_id=ctx.job_id,
        )

    registry.task("image")(image)


def process_image(
    payload: ImagePayload, *, root: Path, max_pixels: int, job_id: str
) -> ImageResult:
    """The whole job, synchronously: read, transform, write atomically, describe."""
    source = inside(root, payload.input)
    picture, source_format = _read(source, payload.input, max_pixels)
    metadata = _metadata(picture)
    for operation in payload.operations:
        picture = _apply(picture, operation, max_pixels)

    image_format = payload.declared_format() or (
        source_format if source_format in WRITABLE_FORMATS else "PNG"
    )
    relative = PurePosixPath(
        payload.output or f"images/{job_id}.{DEFAULT_EXTENSION[image_format]}"
    ).as_posix()
    target = inside(root, relative)
    if target == source:
        raise Permanent(f"output {relative!r} is the input: a re-run would process its own output")

    options: dict[str, Any] = {}
    if payload.quality is not None:
        if image_format not in LOSSY_FORMATS:
            raise Permanent(f"quality applies to JPEG and WEBP only, not {image_format}")
        options["quality"] = payload.quality
    picture = _storable(picture, image_format)
    if payload.strip_metadata:
        picture = _pixels_only(picture)
    elif image_format != "GIF":
        options.update(metadata)

    with atomic_writer(target) as file:
        picture.save(file, format=image_format, **options)
    size = target.stat().st_size
    return ImageResult(
        output=relative,
        width=picture.width,
        height=picture.height,
        format=image_format,
        bytes=size,
    )


def _read(path: Path, name: str, max_pixels: int) -> tuple[Image.Image, str | None]:
    """Open ``path``, refuse it by its header if too large, then decode it upright."""
    try:
        with Image.open(path, formats=READABLE_FORMATS) as opened:
            width, height = opened.size  # from the header: nothing is decoded yet
            if width * height > max_pixels:
                raise ImageRefused(
                    f"{name!r} is {width}x{height} = {width * height} pixels, more than the "
                    f"limit of {max_pixels} (decompression bomb protection)"
                )
            source_format = opened.format
            try:
                opened.load()
            except OSError as exc:
                raise ImageRefused(f"{name!r} could not be decoded: {exc}") from exc
            # exif_transpose returns a copy, so the file can close.
            return ImageOps.exif_transpose(opened), source_format
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRefused(f"{name!r} is too large (decompression bomb protection): {exc}") from exc
    except FileNotFoundError as exc:
        raise Permanent(f"input {name!r} does not exist") from exc
    except IsADirectoryError as exc:
        raise Permanent(f"input {name!r} is a directory, not an image") from exc
    except UnidentifiedImageError as exc:
        readable = ", ".join(READABLE_FORMATS)
        raise ImageRefused(f"{name!r} is not an image (readable formats: {readable})") from exc


def _metadata(picture: Image.Image) -> dict[str, bytes]:
    """What ``strip_metadata=False`` carries over: EXIF (orientation already applied) and ICC."""
    kept: dict[str, bytes] = {}
    exif = picture.getexif()
    if len(exif):
        kept["exif"] = exif.tobytes()
    icc = picture.info.get("icc_profile")
    if icc:
        kept["icc_profile"] = icc
    return kept


def _apply(picture: Image.Image, operation: Operation, max_pixels: int) -> Image.Image:
    """One operation; refuses one whose result would exceed ``max_pixels``."""
    if isinstance(operation, Resize):
        size = (operation.width, operation.height)
        if operation.keep_aspect:
            scale = min(operation.width / picture.width, operation.height / picture.height)
            size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        _check_size(size, max_pixels, "resize")
        return picture.resize(size, Image.Resampling.LANCZOS)
    if isinstance(operation, Thumbnail):
        picture.thumbnail((operation.max_width, operation.max_height), Image.Resampling.LANCZOS)
        return picture
    if isinstance(operation, Crop):
        box = (operation.left, operation.top, operation.right, operation.bottom)
        if operation.right > picture.width or operation.bottom > picture.height:
            raise Permanent(
                f"crop box {box} does not fit the {picture.width}x{picture.height} image"
            )
        return picture.crop(box)
    if isinstance(operation, Convert):
        return picture.convert(operation.mode)
    raise AssertionError(f"unhandled operation {operation!r}")  # the contract allows no other


def _check_size(size: tuple[int, int], max_pixels: int, what: str) -> None:
    if size[0] * size[1] > max_pixels:
        raise ImageRefused(
            f"{what} to {size[0]}x{size[1]} would exceed the limit of {max_pixels} pixels"
        )


def _storable(picture: Image.Image, image_format: str) -> Image.Image:
    """``picture`` in a mode ``image_format`` can store, keeping alpha where it can."""
    if picture.mode in SAVE_MODES[image_format]:
        return picture
    try:
        if not picture.has_transparency_data:
            return picture.convert("RGB")
        rgba = picture.convert("RGBA")
        if "RGBA" in SAVE_MODES[image_format]:
            return rgba
        # No alpha channel in the format (JPEG): flatten onto white rather than black.
        flat = Image.new("RGB", rgba.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    except ValueError as exc:
        raise Permanent(f"cannot write a {picture.mode} image as {image_format}: {exc}") from exc


def _pixels_only(picture: Image.Image) -> Image.Image:
    """A new image holding ``picture``'s pixels (and palette, transparency), nothing else."""
    fresh = Image.frombytes(picture.mode, picture.size, picture.tobytes())
    if picture.palette is not None and picture.mode in ("P", "PA"):
        rawmode = picture.palette.mode
        palette = picture.getpalette(rawmode)
        if palette is not None:
            fresh.putpalette(palette, rawmode)
    if "transparency" in picture.info:  # part of the pixels' meaning, not metadata
        fresh.info["transparency"] = picture.info["transparency"]
    return fresh
