"""The ``image`` task, called through the registry (contract validation included) on real
images generated with Pillow under a temporary storage root."""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageCms, ImageFile

from ferrisqueue.errors import Permanent
from ferrisqueue.jobtypes.image import JOB_TYPE
from ferrisqueue.settings import Settings
from worker.context import JobContext
from worker.registry import InvalidPayload, TaskRegistry
from worker.storage import OutsideStorageRoot
from worker.tasks.image import ImageRefused, register

RunImage = Callable[..., Awaitable[dict[str, Any]]]

EXIF_MAKE = 0x010F
EXIF_ORIENTATION = 0x0112


@pytest.fixture
def root(tmp_path: Path) -> Path:
    storage = tmp_path / "storage"
    storage.mkdir()
    return storage


@pytest.fixture
def run(tmp_path: Path, root: Path) -> RunImage:
    """``await run(payload, job_id=..., max_pixels=...)``: the handler as a worker runs it."""

    async def run_image(
        payload: dict[str, Any], *, job_id: str = "job-1", max_pixels: int = 50_000_000
    ) -> dict[str, Any]:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            var_dir=tmp_path / "var",
            storage_root=root,
            image_max_pixels=max_pixels,
        )
        registry = TaskRegistry({"image": JOB_TYPE})
        register(registry, settings)

        async def report(fraction: float, message: str | None) -> None:
            pass

        ctx = JobContext(
            job_id, "default", "image", 1, "test-worker", report, asyncio.get_running_loop()
        )
        result: dict[str, Any] = await registry.runner("image")(ctx, payload)
        return result

    return run_image


def save(root: Path, name: str, image: Image.Image, **options: Any) -> str:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return name


def quadrants(width: int = 200, height: int = 100) -> Image.Image:
    """Red, green / blue, white quadrants: where a crop came from shows in its colours."""
    image = Image.new("RGB", (width, height), "red")
    image.paste("green", (width // 2, 0, width, height // 2))
    image.paste("blue", (0, height // 2, width // 2, height))
    image.paste("white", (width // 2, height // 2, width, height))
    return image


def opened(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image


# --- Operations -------------------------------------------------------------------------------


async def test_resize_writes_the_requested_size_in_the_format_of_the_extension(
    run: RunImage, root: Path
) -> None:
    save(root, "in/photo.png", quadrants())

    result = await run(
        {
            "input": "in/photo.png",
            "output": "out/small.jpg",
            "operations": [{"op": "resize", "width": 50, "height": 40, "keep_aspect": False}],
            "quality": 90,
        }
    )

    written = root / "out/small.jpg"
    assert result == {
        "output": "out/small.jpg",
        "width": 50,
        "height": 40,
        "format": "JPEG",
        "bytes": written.stat().st_size,
    }
    image = opened(written)
    assert (image.format, image.size, image.mode) == ("JPEG", (50, 40), "RGB")


async def test_resize_keeping_aspect_fits_inside_the_box(run: RunImage, root: Path) -> None:
    save(root, "wide.png", quadrants(200, 100))

    result = await run(
        {
            "input": "wide.png",
            "output": "fit.png",
            "operations": [{"op": "resize", "width": 100, "height": 100}],
        }
    )

    assert (result["width"], result["height"]) == (100, 50)
    assert opened(root / "fit.png").size == (100, 50)


async def test_thumbnail_keeps_aspect_and_never_enlarges(run: RunImage, root: Path) -> None:
    save(root, "big.png", quadrants(400, 300))
    save(root, "tiny.png", quadrants(40, 30))
    thumbnail = [{"op": "thumbnail", "max_width": 100, "max_height": 100}]

    big = await run({"input": "big.png", "output": "t/big.png", "operations": thumbnail})
    tiny = await run({"input": "tiny.png", "output": "t/tiny.png", "operations": thumbnail})

    assert (big["width"], big["height"]) == (100, 75)
    assert opened(root / "t/big.png").size == (100, 75)
    assert (tiny["width"], tiny["height"]) == (40, 30)


async def test_crop_keeps_exactly_the_box(run: RunImage, root: Path) -> None:
    save(root, "q.png", quadrants(200, 100))

    result = await run(
        {
            "input": "q.png",
            "output": "crop.png",
            "operations": [{"op": "crop", "left": 90, "top": 40, "right": 130, "bottom": 70}],
        }
    )

    image = opened(root / "crop.png").convert("RGB")
    assert (result["width"], result["height"]) == (40, 30)
    assert image.getpixel((0, 0)) == (255, 0, 0)  # (90, 40): red quadrant
    assert image.getpixel((39, 0)) == (0, 128, 0)  # (129, 40): green
    assert image.getpixel((0, 29)) == (0, 0, 255)  # (90, 69): blue
    assert image.getpixel((39, 29)) == (255, 255, 255)  # (129, 69): white


@pytest.mark.parametrize(
    "box",
    [
        {"left": 10, "top": 0, "right": 10, "bottom": 5},
        {"left": 0, "top": 8, "right": 5, "bottom": 3},
    ],
    ids=["right-not-after-left", "bottom-above-top"],
)
async def test_an_empty_crop_box_is_an_invalid_payload(
    run: RunImage, root: Path, box: dict[str, int]
) -> None:
    save(root, "q.png", quadrants())

    with pytest.raises(InvalidPayload, match="crop needs"):
        await run({"input": "q.png", "operations": [{"op": "crop", **box}]})


async def test_a_crop_box_beyond_the_image_is_refused(run: RunImage, root: Path) -> None:
    save(root, "q.png", quadrants(200, 100))

    with pytest.raises(Permanent, match="does not fit the 200x100 image"):
        await run(
            {
                "input": "q.png",
                "operations": [{"op": "crop", "left": 0, "top": 0, "right": 201, "bottom": 10}],
            }
        )


async def test_operations_run_in_order_and_convert_changes_the_mode(
    run: RunImage, root: Path
) -> None:
    save(root, "q.png", quadrants(200, 100))

    result = await run(
        {
            "input": "q.png",
            "output": "grey.webp",
            "operations": [
                {"op": "crop", "left": 0, "top": 0, "right": 100, "bottom": 100},
                {"op": "resize", "width": 10, "height": 10},
                {"op": "convert", "mode": "L"},
            ],
        }
    )

    image = opened(root / "grey.webp")
    assert result["format"] == "WEBP"
    assert (image.format, image.size) == ("WEBP", (10, 10))
    red, green, blue = image.convert("RGB").getpixel((5, 2))
    assert red == green == blue  # greyscale survived WEBP's RGB storage


async def test_transparency_is_flattened_onto_white_for_jpeg(run: RunImage, root: Path) -> None:
    save(root, "clear.png", Image.new("RGBA", (8, 8), (0, 0, 0, 0)))

    await run({"input": "clear.png", "output": "clear.jpg"})

    assert opened(root / "clear.jpg").getpixel((4, 4)) == (255, 255, 255)


# --- Metadata ---------------------------------------------------------------------------------


def photo_with_metadata(root: Path, orientation: int = 1) -> str:
    exif = Image.Exif()
    exif[EXIF_MAKE] = "FerrisCam"
    exif[EXIF_ORIENTATION] = orientation
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return save(root, "photo.jpg", quadrants(200, 100), exif=exif.tobytes(), icc_profile=icc)


async def test_strip_metadata_removes_exif_and_the_icc_profile(run: RunImage, root: Path) -> None:
    name = photo_with_metadata(root)
    assert opened(root / name).getexif()[EXIF_MAKE] == "FerrisCam"  # the input has them

    await run({"input": name, "output": "stripped.jpg"})
    await run({"input": name, "output": "stripped.png"})

    for output in ("stripped.jpg", "stripped.png"):
        image = opened(root / output)
        assert len(image.getexif()) == 0, output
        assert "exif" not in image.info, output
        assert "icc_profile" not in image.info, output


async def test_without_strip_metadata_exif_and_icc_are_kept(run: RunImage, root: Path) -> None:
    name = photo_with_metadata(root)

    await run({"input": name, "output": "kept.jpg", "strip_metadata": False})

    image = opened(root / "kept.jpg")
    assert image.getexif()[EXIF_MAKE] == "FerrisCam"
    assert image.info.get("icc_profile")


async def test_the_exif_orientation_is_applied_before_operations(run: RunImage, root: Path) -> None:
    # Orientation 6: stored landscape, shown rotated 90 degrees clockwise (portrait).
    name = photo_with_metadata(root, orientation=6)

    result = await run({"input": name, "output": "upright.png"})

    assert (result["width"], result["height"]) == (100, 200)


# --- Paths and idempotency ----------------------------------------------------------------------


async def test_default_output_is_named_after_the_job_and_a_rerun_overwrites_it(
    run: RunImage, root: Path
) -> None:
    save(root, "q.png", quadrants())
    payload = {"input": "q.png", "operations": [{"op": "resize", "width": 20, "height": 20}]}

    first = await run(payload, job_id="0190-abc")
    second = await run(payload, job_id="0190-abc")

    assert first == second
    assert first["output"] == "images/0190-abc.png"
    assert sorted(p.name for p in (root / "images").iterdir()) == ["0190-abc.png"]  # no temp left


async def test_an_explicit_format_names_the_default_extension(run: RunImage, root: Path) -> None:
    save(root, "q.png", quadrants())

    result = await run({"input": "q.png", "format": "GIF"}, job_id="j2")

    assert result["output"] == "images/j2.gif"
    assert opened(root / "images/j2.gif").format == "GIF"


async def test_writing_over_the_input_is_refused(run: RunImage, root: Path) -> None:
    save(root, "q.png", quadrants())

    with pytest.raises(Permanent, match="is the input"):
        await run({"input": "q.png", "output": "./q.png"})


@pytest.mark.parametrize(
    "payload",
    [
        {"input": "q.png", "output": "x.png", "quality": 80},
        {"input": "q.png", "output": "x.bmp"},
        {"input": "q.png", "operations": [{"op": "rotate"}]},
        {"input": "q.png", "operations": [{"op": "resize", "width": 0, "height": 5}]},
        {"input": "q.png", "colour": "red"},
    ],
    ids=["quality-for-png", "unknown-extension", "unknown-op", "zero-width", "unknown-field"],
)
async def test_a_payload_outside_the_contract_is_invalid(
    run: RunImage, root: Path, payload: dict[str, Any]
) -> None:
    save(root, "q.png", quadrants())

    with pytest.raises(InvalidPayload):
        await run(payload)


@pytest.mark.parametrize(
    ("field", "path"),
    [
        ("input", "../outside.png"),
        ("input", "/etc/passwd"),
        ("input", "link/outside.png"),
        ("output", "../escaped.png"),
        ("output", "link/escaped.png"),
    ],
)
async def test_paths_outside_the_storage_root_are_refused(
    run: RunImage, root: Path, field: str, path: str
) -> None:
    save(root.parent, "outside.png", quadrants())
    save(root, "q.png", quadrants())
    (root / "link").symlink_to(root.parent)  # a link that points out of the root
    payload = {"input": "q.png", "output": "ok.png", field: path}

    with pytest.raises(OutsideStorageRoot):
        await run(payload)

    assert not (root.parent / "escaped.png").exists()


# --- Refusals ---------------------------------------------------------------------------------


async def test_a_file_that_is_not_an_image_is_refused(run: RunImage, root: Path) -> None:
    (root / "notes.png").write_text("these are not pixels\n")

    with pytest.raises(ImageRefused, match=r"'notes\.png' is not an image"):
        await run({"input": "notes.png"})


async def test_a_missing_input_fails_permanently(run: RunImage) -> None:
    with pytest.raises(Permanent, match="does not exist"):
        await run({"input": "nowhere.png"})


async def test_an_image_over_the_pixel_limit_is_refused_before_decoding(
    run: RunImage, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save(root, "q.png", quadrants(200, 100))

    def no_decoding(self: ImageFile.ImageFile) -> Any:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)

    with pytest.raises(ImageRefused, match=r"200x100 = 20000 pixels.*decompression bomb"):
        await run({"input": "q.png"}, max_pixels=19_999)


async def test_an_operation_that_would_exceed_the_limit_is_refused(
    run: RunImage, root: Path
) -> None:
    save(root, "q.png", quadrants(20, 10))

    with pytest.raises(ImageRefused, match="would exceed the limit of 1000 pixels"):
        await run(
            {"input": "q.png", "operations": [{"op": "resize", "width": 2000, "height": 1000}]},
            max_pixels=1000,
        )


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` in its header and has no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


async def test_pillows_own_bomb_guard_fails_the_job_permanently(run: RunImage, root: Path) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    (root / "bomb.png").write_bytes(png_header_only(100_000, 100_000))

    # Our limit set above Pillow's: Pillow's guard (2 x MAX_IMAGE_PIXELS) trips in open().
    with pytest.raises(ImageRefused, match="decompression bomb"):
        await run({"input": "bomb.png"}, max_pixels=10**12)

    assert limit == Image.MAX_IMAGE_PIXELS  # the process-wide setting is left alone


async def test_a_header_claiming_a_huge_image_is_refused_by_our_limit(
    run: RunImage, root: Path
) -> None:
    (root / "claims.png").write_bytes(png_header_only(5_000, 5_000))  # 25 MP, under Pillow's

    with pytest.raises(ImageRefused, match="5000x5000 = 25000000 pixels"):
        await run({"input": "claims.png"}, max_pixels=1_000_000)
