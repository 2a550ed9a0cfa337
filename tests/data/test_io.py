"""Tests for multimix.data.io: every fixture is built in tmp_path, nothing is downloaded."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from multimix.core.errors import DataError
from multimix.data.io import (
    IMAGE_SUFFIXES,
    is_image_file,
    read_image,
    read_mask,
    resize_image,
    resize_mask,
    write_png,
)

RAW = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 100).astype(np.uint16)  # 0 .. 1100


# ----------------------------------------------------------------------------- helpers


def save_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def save_dicom(path: Path, pixels: np.ndarray = RAW, **attributes: object) -> Path:
    """A minimal uncompressed 16-bit MONOCHROME2 DICOM; attributes override or add tags."""
    transfer_syntax = attributes.pop("transfer_syntax", ExplicitVRLittleEndian)
    pixel_data = attributes.pop("pixel_data", None)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    for name, value in attributes.items():
        setattr(ds, name, value)
    if pixel_data is not None:
        ds.PixelData = pixel_data
    elif pixels.size:
        ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def stretch(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    return (values - values.min()) / (values.max() - values.min())


def png_with_size(path: Path, width: int, height: int) -> Path:
    """A 1x1 PNG whose IHDR claims another size: only the header is needed to refuse it."""
    path = save_png(path, np.zeros((1, 1), dtype=np.uint8))
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def raises_data_error(path: Path, match: str, call=read_image, **kwargs: object) -> DataError:
    with pytest.raises(DataError, match=match) as info:
        call(path, **kwargs)
    assert path.name in str(info.value)
    assert "\n" not in str(info.value)
    return info.value


# ----------------------------------------------------------------------------- suffixes


def test_is_image_file_by_suffix_and_hidden_files() -> None:
    assert {".png", ".jpg", ".jpeg", ".dcm", ".dicom"} == set(IMAGE_SUFFIXES)
    assert is_image_file(Path("a/b.png"))
    assert is_image_file(Path("X.JPEG"))
    assert is_image_file(Path("scan.Dcm"))
    assert is_image_file(Path("scan.dicom"))
    assert not is_image_file(Path("._b.png"))
    assert not is_image_file(Path(".hidden.jpg"))
    assert not is_image_file(Path("notes.txt"))
    assert not is_image_file(Path("png"))


# ----------------------------------------------------------------------------- PNG / JPEG


def test_8bit_gray_png_exact_values(tmp_path: Path) -> None:
    pixels = np.array([[0, 1, 128], [200, 254, 255]], dtype=np.uint8)
    image = read_image(save_png(tmp_path / "g.png", pixels))
    assert image.dtype == np.float32
    assert image.shape == (2, 3)
    np.testing.assert_array_equal(image, pixels.astype(np.float32) / 255)


def test_rgb_and_other_modes_become_gray(tmp_path: Path) -> None:
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[1, 2] = (90, 90, 90)
    image = read_image(save_png(tmp_path / "c.png", rgb))
    expected = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float32) / 255
    assert image.shape == (2, 3)
    np.testing.assert_allclose(image, expected)
    assert image[1, 2] == pytest.approx(90 / 255)

    rgba = np.dstack([rgb, np.full((2, 3), 7, dtype=np.uint8)])
    np.testing.assert_allclose(read_image(save_png(tmp_path / "a.png", rgba)), expected)
    Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).convert("P").save(tmp_path / "p.png")
    np.testing.assert_allclose(read_image(tmp_path / "p.png"), [[0.0, 1.0]])


def test_16bit_png_is_stretched(tmp_path: Path) -> None:
    pixels = np.array([[1000, 2000], [3000, 5000]], dtype=np.uint16)
    path = save_png(tmp_path / "wide.png", pixels)
    assert Image.open(path).mode.startswith("I")
    image = read_image(path)
    assert image.dtype == np.float32
    assert image.min() == 0.0 and image.max() == 1.0
    np.testing.assert_allclose(image, stretch(pixels), atol=1e-6)


def test_constant_16bit_png_gives_zeros(tmp_path: Path) -> None:
    image = read_image(save_png(tmp_path / "flat.png", np.full((4, 5), 777, dtype=np.uint16)))
    np.testing.assert_array_equal(image, np.zeros((4, 5), dtype=np.float32))


def test_jpeg_reads(tmp_path: Path) -> None:
    pixels = np.full((16, 24), 128, dtype=np.uint8)
    pixels[:, 12:] = 32
    Image.fromarray(pixels).save(tmp_path / "x.jpg", quality=95)
    Image.fromarray(np.dstack([pixels] * 3)).save(tmp_path / "y.JPEG", quality=95)
    for name in ("x.jpg", "y.JPEG"):
        image = read_image(tmp_path / name)
        assert image.shape == (16, 24) and image.dtype == np.float32
        np.testing.assert_allclose(image, pixels / 255, atol=6 / 255)


def test_unicode_and_spaces_in_names(tmp_path: Path) -> None:
    folder = tmp_path / "Röntgen bilder"
    folder.mkdir()
    png = save_png(folder / "thorax ü 胸部 (1).png", np.full((2, 2), 51, dtype=np.uint8))
    np.testing.assert_allclose(read_image(png), 0.2)
    dcm = save_dicom(folder / "patient é 1.dcm")
    np.testing.assert_allclose(read_image(dcm), stretch(RAW), atol=1e-6)
    broken = folder / "kaputt ß.png"
    broken.write_bytes(b"\x89PNG nope")
    raises_data_error(broken, "not a readable image")


# ----------------------------------------------------------------------------- DICOM


def test_dicom_monochrome2_and_monochrome1_are_inverses(tmp_path: Path) -> None:
    mono2 = read_image(save_dicom(tmp_path / "m2.dcm"))
    mono1 = read_image(save_dicom(tmp_path / "m1.dcm", PhotometricInterpretation="MONOCHROME1"))
    assert mono2.dtype == np.float32 and mono2.shape == RAW.shape
    np.testing.assert_allclose(mono2, stretch(RAW), atol=1e-6)
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    assert mono1[0, 0] == 1.0 and mono1[-1, -1] == 0.0


def test_dicom_rescale_is_applied(tmp_path: Path) -> None:
    shifted = read_image(save_dicom(tmp_path / "ct.dcm", RescaleSlope=2, RescaleIntercept=-1024))
    np.testing.assert_allclose(shifted, stretch(RAW), atol=1e-6)  # order kept, range stretched
    flipped = read_image(save_dicom(tmp_path / "neg.dcm", RescaleSlope=-1, RescaleIntercept=0))
    np.testing.assert_allclose(flipped, 1.0 - stretch(RAW), atol=1e-6)


def test_dicom_window_clips(tmp_path: Path) -> None:
    image = read_image(save_dicom(tmp_path / "w.dcm", WindowCenter=500, WindowWidth=400))
    raw = RAW.ravel()
    flat = image.ravel()
    assert np.all(flat[raw <= 300] == 0.0)
    assert np.all(flat[raw >= 700] == 1.0)
    inside = flat[(raw > 300) & (raw < 700)]
    assert inside.size == 3 and np.all(np.diff(inside) > 0)
    assert np.all((inside > 0) & (inside < 1))


def test_dicom_colour_is_averaged(tmp_path: Path) -> None:
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 1] = (30, 60, 90)
    rgb[1, 0] = (255, 255, 255)
    rgb[1, 1] = (0, 0, 120)
    path = save_dicom(
        tmp_path / "rgb.dcm",
        rgb,
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
        SamplesPerPixel=3,
        PlanarConfiguration=0,
        PhotometricInterpretation="RGB",
    )
    np.testing.assert_allclose(read_image(path), stretch(rgb.mean(axis=-1)), atol=1e-6)


def test_dicom_detected_by_magic_bytes(tmp_path: Path) -> None:
    path = save_dicom(tmp_path / "export.bin")
    np.testing.assert_allclose(read_image(path), stretch(RAW), atol=1e-6)


def test_dicom_errors(tmp_path: Path) -> None:
    frames = np.stack([RAW, RAW])
    multi = save_dicom(tmp_path / "multi.dcm", RAW, NumberOfFrames=2, pixel_data=frames.tobytes())
    raises_data_error(multi, "multi-frame")
    raises_data_error(save_dicom(tmp_path / "nopix.dcm", np.zeros((0, 0))), "no pixel data")
    compressed = save_dicom(
        tmp_path / "jls.dcm",
        transfer_syntax=JPEGLSLossless,
        pixel_data=encapsulate([b"\xff\xd8\xff\xf7 not really jpeg-ls \xff\xd9"]),
    )
    raises_data_error(compressed, "pylibjpeg")
    raises_data_error(save_dicom(tmp_path / "big.dcm"), "decompression bomb", max_pixels=11)
    data = save_dicom(tmp_path / "whole.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 20])
    raises_data_error(tmp_path / "cut.dcm", "not a readable image|truncated")
    (tmp_path / "header.dcm").write_bytes(data[:200])
    raises_data_error(tmp_path / "header.dcm", "truncated")


# ----------------------------------------------------------------------------- bad files


def test_missing_empty_and_unsupported_files(tmp_path: Path) -> None:
    raises_data_error(tmp_path / "missing.png", "file not found")
    for name in ("empty.png", "empty.jpg", "empty.dcm"):
        (tmp_path / name).write_bytes(b"")
        raises_data_error(tmp_path / name, "empty file")
    (tmp_path / "scan.tif").write_bytes(b"II*\x00" + bytes(100))
    raises_data_error(tmp_path / "scan.tif", "unsupported file type")
    (tmp_path / "folder.png").mkdir()
    raises_data_error(tmp_path / "folder.png", "folder")


def test_truncated_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    for name in ("full.png", "full.jpg"):
        Image.fromarray(noise).save(tmp_path / name)
        data = (tmp_path / name).read_bytes()
        half = tmp_path / f"half {name}"
        half.write_bytes(data[: len(data) // 2])
        raises_data_error(half, "not a readable image")
        raises_data_error(half, "not a readable image", call=read_mask)


@pytest.mark.parametrize("name", ["noise.png", "noise.jpg", "noise.jpeg", "noise.dcm"])
def test_random_bytes(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(1).bytes(2048))
    raises_data_error(path, "not a readable image")
    raises_data_error(path, "not a readable image", call=read_mask)


def test_decompression_bomb_refused_from_header(tmp_path: Path) -> None:
    small = save_png(tmp_path / "one.png", np.zeros((1, 1), dtype=np.uint8))
    raises_data_error(small, "decompression bomb", max_pixels=0)
    # Above max_pixels but below PIL's own limit: our header check refuses it.
    raises_data_error(png_with_size(tmp_path / "big.png", 7000, 7000), r"7000x7000.*bomb")
    # Far above PIL's limit: PIL's DecompressionBombError is converted too.
    raises_data_error(png_with_size(tmp_path / "huge.png", 100_000, 100_000), "bomb")
    raises_data_error(tmp_path / "huge.png", "bomb", call=read_mask)


# ----------------------------------------------------------------------------- masks


@pytest.mark.parametrize(
    ("pixels", "dtype"),
    [
        ([[0, 255], [255, 0]], np.uint8),
        ([[0, 1], [1, 0]], np.uint8),
        ([[0, 65535], [65535, 0]], np.uint16),
        ([[0, 1], [1, 0]], np.uint16),
    ],
)
def test_binary_masks(tmp_path: Path, pixels: list[list[int]], dtype: type) -> None:
    mask = read_mask(save_png(tmp_path / "m.png", np.array(pixels, dtype=dtype)), shape=(2, 2))
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, [[False, True], [True, False]])


def test_constant_and_special_masks(tmp_path: Path) -> None:
    zeros = read_mask(save_png(tmp_path / "z.png", np.zeros((3, 2), dtype=np.uint8)))
    assert zeros.shape == (3, 2) and not zeros.any()
    for value in (1, 255):
        full = read_mask(save_png(tmp_path / f"f{value}.png", np.full((3, 2), value, np.uint8)))
        assert full.all()
    Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).convert("1").save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "b.png"), [[False, True]])
    gray_rgb = np.dstack([np.array([[0, 255]], dtype=np.uint8)] * 3)
    np.testing.assert_array_equal(read_mask(save_png(tmp_path / "g.png", gray_rgb)), [[0, 1]])


def test_masks_that_are_not_binary(tmp_path: Path) -> None:
    path = save_png(tmp_path / "m.png", np.array([[0, 128, 255]], dtype=np.uint8))
    raises_data_error(path, r"mask is not binary: found values 0, 128, 255", call=read_mask)
    many = save_png(tmp_path / "many.png", np.arange(10, dtype=np.uint8).reshape(2, 5))
    error = raises_data_error(many, "not binary", call=read_mask)
    assert (
        "0, 1, 2, 3, 4," in str(error) and "10 distinct" in str(error) and "5, 6" not in str(error)
    )
    mixed = save_png(tmp_path / "mixed.png", np.array([[0, 1, 255]], dtype=np.uint8))
    raises_data_error(mixed, "not binary", call=read_mask)
    red = np.zeros((1, 2, 3), dtype=np.uint8)
    red[0, 1, 0] = 255
    raises_data_error(save_png(tmp_path / "red.png", red), "colour", call=read_mask)


def test_mask_shape_mismatch_names_both_sizes(tmp_path: Path) -> None:
    path = save_png(tmp_path / "m.png", np.zeros((3, 4), dtype=np.uint8))
    raises_data_error(path, "mask is 4x3 but its image is 5x6", call=read_mask, shape=(6, 5))
    assert read_mask(path, shape=(3, 4)).shape == (3, 4)


def test_mask_missing_and_empty(tmp_path: Path) -> None:
    raises_data_error(tmp_path / "nope.png", "file not found", call=read_mask)
    (tmp_path / "e.png").write_bytes(b"")
    raises_data_error(tmp_path / "e.png", "empty file", call=read_mask)


# ----------------------------------------------------------------------------- resizing


def test_resize_image_antialiased_shape_and_range() -> None:
    rng = np.random.default_rng(2)
    image = rng.random((100, 80), dtype=np.float32)
    small = resize_image(image, 32)
    assert small.shape == (32, 32) and small.dtype == np.float32
    assert small.min() >= 0.0 and small.max() <= 1.0
    checker = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float32)
    np.testing.assert_allclose(resize_image(checker, 8), 0.5, atol=0.05)  # no aliasing
    step = np.zeros((8, 8), dtype=np.float32)
    step[:, 4:] = 1.0
    big = resize_image(step, 64)
    assert big.shape == (64, 64) and big.min() >= 0.0 and big.max() <= 1.0


def test_resize_image_same_size_is_a_copy() -> None:
    image = np.linspace(0, 1, 16, dtype=np.float64).reshape(4, 4)
    out = resize_image(image, 4)
    assert out.dtype == np.float32 and not np.shares_memory(out, image)
    np.testing.assert_allclose(out, image, atol=1e-7)


def test_resize_mask_stays_boolean() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[:5, :] = True
    out = resize_mask(mask, 4)
    assert out.dtype == bool and out.shape == (4, 4)
    np.testing.assert_array_equal(out[:2], True)
    np.testing.assert_array_equal(out[2:], False)
    up = resize_mask(mask, 20)
    assert up.dtype == bool and up.sum() == 200
    same = resize_mask(mask, 10)
    assert not np.shares_memory(same, mask)
    np.testing.assert_array_equal(same, mask)


# ----------------------------------------------------------------------------- writing


def test_write_png_round_trips(tmp_path: Path) -> None:
    values = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    target = tmp_path / "new dir" / "sub ü" / "out.png"
    write_png(target, values)
    np.testing.assert_allclose(read_image(target), np.round(values * 255) / 255, atol=1e-7)
    assert [p.name for p in target.parent.iterdir()] == ["out.png"]  # no temp file left

    pixels = np.array([[0, 7, 255]], dtype=np.uint8)
    write_png(target, pixels)  # overwrites
    np.testing.assert_array_equal(np.asarray(Image.open(target)), pixels)
    assert Image.open(target).mode == "L"

    mask = np.array([[True, False], [False, True]])
    write_png(tmp_path / "mask.png", mask)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "mask.png")), mask * 255)
    np.testing.assert_array_equal(read_mask(tmp_path / "mask.png"), mask)


def test_write_png_rejects_bad_arrays(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_png(tmp_path / "a.png", np.array([[0.0, 1.5]]))
    with pytest.raises(ValueError):
        write_png(tmp_path / "b.png", np.zeros((2, 2), dtype=np.int32))
    with pytest.raises(ValueError):
        write_png(tmp_path / "c.png", np.zeros((2, 2, 4), dtype=np.uint8))
    with pytest.raises(ValueError):
        write_png(tmp_path / "d.png", np.zeros((2, 2, 3), dtype=np.float32))
    assert list(tmp_path.iterdir()) == []


def test_write_png_writes_rgb(tmp_path: Path) -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    write_png(tmp_path / "rgb.png", rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "rgb.png")), rgb)
