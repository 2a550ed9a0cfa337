"""Real-world files that used to be refused or misread: DICOM without extension or preamble,
EXIF-rotated JPEGs, masks named like their image with another extension, comma-only rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from multimix.core.errors import DataError
from multimix.data.bad_inputs import BadInputs
from multimix.data.io import looks_like_image, read_image, read_mask
from multimix.data.sources import load_source
from tests.data.test_io import save_dicom

RAW = (np.arange(20 * 30).reshape(20, 30) * 7 % 4000).astype(np.uint16)


def bare_dicom(path: Path, pixels: np.ndarray = RAW) -> Path:
    """An old export: no 128-byte preamble, no DICM, no file meta, implicit VR little endian."""
    ds = Dataset()
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert path.read_bytes()[128:132] != b"DICM"
    return path


def stretch(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    return ((values - values.min()) / (values.max() - values.min())).astype(np.float32)


def shared(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    return root


@pytest.mark.parametrize("name", ["scan.dcm", "OLD0001", "1.2.840.113619.2.55.3.17"])
def test_dicom_without_preamble_or_file_meta_is_read(tmp_path, name):
    path = bare_dicom(tmp_path / name)
    assert looks_like_image(path)
    np.testing.assert_allclose(read_image(path), stretch(RAW), atol=1e-6)


def test_extensionless_dicom_in_images_is_listed_and_labels_resolve(tmp_path):
    root = shared(tmp_path / "src")
    save_dicom(root / "images" / "IM0001", RAW)
    bare_dicom(root / "images" / "IM0002")
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(root / "masks" / "IM0001.png")
    (root / "images" / "README").write_text("exported by PACS, not an image\n")
    (root / "labels.csv").write_text("image,label\nIM0001,pneumonia\nIM0002,normal\n")
    source = load_source(root)
    records = source.by_name()
    assert sorted(records) == ["IM0001", "IM0002"]
    assert records["IM0001"].label == "pneumonia" and records["IM0002"].label == "normal"
    assert records["IM0001"].masks["lungs"].name == "IM0001.png"
    assert read_image(records["IM0002"].image).shape == (20, 30)


def test_plain_folder_of_extensionless_dicom(tmp_path):
    save_dicom(tmp_path / "IM0001", RAW)
    (tmp_path / "notes").write_text("plain text without a suffix")
    assert [r.name for r in load_source(tmp_path).records] == ["IM0001"]


def _rotated_jpeg(path: Path, pixels: np.ndarray, orientation: int) -> None:
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, format="JPEG", quality=100, exif=exif)


def test_exif_orientation_is_applied_to_images_and_masks(tmp_path):
    pixels = np.zeros((40, 60), np.uint8)  # 60 wide, 40 high, bright left half
    pixels[:, :30] = 255
    _rotated_jpeg(tmp_path / "a.jpg", pixels, orientation=6)  # "rotate 90 CW to view"
    image = read_image(tmp_path / "a.jpg")
    assert image.shape == (60, 40)  # as a viewer shows it: portrait
    assert image[:30].mean() > 0.9 and image[30:].mean() < 0.1  # bright half now on top
    mask = Image.fromarray(pixels)
    exif = mask.getexif()
    exif[0x0112] = 6
    mask.save(tmp_path / "m.png", exif=exif)
    got = read_mask(tmp_path / "m.png", shape=image.shape)
    assert got[:30].all() and not got[30:].any()


def test_mask_png_matches_a_jpeg_image_by_stem(tmp_path):
    root = shared(tmp_path / "src")
    Image.fromarray(np.full((20, 30), 128, np.uint8)).save(root / "images" / "a.jpg")
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(root / "masks" / "a.png")
    (root / "masks" / "heart").mkdir()
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(root / "masks" / "heart" / "a.png")
    record = load_source(root).by_name()["a.jpg"]
    assert record.masks == {"lungs": root / "masks" / "a.png", "heart": root / "masks/heart/a.png"}


def test_two_images_sharing_a_stem_make_their_mask_an_error(tmp_path):
    root = shared(tmp_path / "src")
    Image.fromarray(np.full((20, 30), 128, np.uint8)).save(root / "images" / "a.jpg")
    save_dicom(root / "images" / "a.dcm", RAW)
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(root / "masks" / "a.png")
    with pytest.raises(DataError) as err:
        load_source(root)
    message = str(err.value)
    assert message.startswith(f"{root / 'masks' / 'a.png'}: mask fits two images, a.dcm and a.jpg")
    assert "\n" not in message
    bad = BadInputs("skip")
    source = load_source(root, bad=bad)  # under skip: both images stay, the mask is left out
    assert sorted(source.by_name()) == ["a.dcm", "a.jpg"] and len(bad) == 1
    assert not any(r.masks for r in source.records)


def test_comma_only_rows_are_blank_lines(tmp_path):
    root = shared(tmp_path / "src")
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((20, 30), 128, np.uint8)).save(root / "images" / name)
    (root / "labels.csv").write_text(
        "image,label,notes\na.png,normal,\n,,\n, ,\nb.png,pneumonia,\n,,\n"
    )
    (root / "meta.csv").write_text("image,patient_id\r\na.png,p1\r\n,\r\n")
    records = load_source(root).by_name()
    assert records["a.png"].label == "normal" and records["b.png"].label == "pneumonia"
    assert records["a.png"].patient == "p1"
