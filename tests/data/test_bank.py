from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from multimix.core.errors import DataError
from multimix.data.bank import load_bank
from multimix.data.io import write_png
from multimix.data.labels import LabelSpace
from multimix.data.sources import load_source
from tests.data.test_io import save_dicom

LABELS = LabelSpace(("normal", "pneumonia"))


def test_dicom_monochrome1_and_16bit_png_load_through_the_data_layer(tmp_path):
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    folder = tmp_path / "mixed"
    folder.mkdir()
    save_dicom(folder / "mono1.dcm", ramp, PhotometricInterpretation="MONOCHROME1")
    save_dicom(folder / "mono2.dcm", ramp)
    Image.fromarray(ramp).save(folder / "sixteen.png")
    source = load_source(folder)
    bank = load_bank(source.records, 8, ("lungs",), LABELS)
    by_name = {r.name: i for i, r in enumerate(bank.records)}
    mono1 = bank.images[by_name["mono1.dcm"], 0].int()
    mono2 = bank.images[by_name["mono2.dcm"], 0].int()
    sixteen = bank.images[by_name["sixteen.png"], 0].int()
    assert torch.equal(mono1, 255 - mono2)  # MONOCHROME1 is inverted: bone stays bright
    assert torch.equal(sixteen, mono2) and mono2.min() == 0 and mono2.max() == 255


def test_bank_holds_masks_labels_and_nearest_resized_masks(tmp_path):
    root = tmp_path / "s"
    image = np.zeros((20, 20), np.uint8)
    write_png(root / "images" / "a.png", image)
    write_png(root / "images" / "b.png", image)
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    write_png(root / "masks" / "a.png", mask)
    (root / "labels.csv").write_text("image,label\na.png,PNEUMONIA\n")
    bank = load_bank(load_source(root).records, 10, ("lungs", "heart"), LABELS)
    assert bank.targets.tolist() == [1, -1] and bank.labeled.tolist() == [True, False]
    assert bank.known.tolist() == [[True, False], [False, False]]
    assert set(bank.masks.unique().tolist()) == {0, 1} and bank.masks[0, 0].sum() == 25


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.full((20, 20), 128, np.uint8), "not binary"),
        (np.zeros((10, 20), np.uint8), "mask is 20x10 but its image is 20x20"),
    ],
)
def test_bad_masks_are_found_when_loading(tmp_path, mask, message):
    root = tmp_path / "s"
    write_png(root / "images" / "a.png", np.zeros((20, 20), np.uint8))
    (root / "masks").mkdir()
    Image.fromarray(mask).save(root / "masks" / "a.png")
    with pytest.raises(DataError, match=message) as err:
        load_bank(load_source(root).records, 10, ("lungs",), LABELS)
    assert "masks/a.png" in str(err.value)


def test_unknown_label_names_file_and_label(tmp_path):
    root = tmp_path / "s"
    write_png(root / "images" / "x.png", np.zeros((8, 8), np.uint8))
    (root / "labels.csv").write_text("image,label\nx.png,covid\n")
    with pytest.raises(DataError, match=r"x\.png: label 'covid' is not one of"):
        load_bank(load_source(root).records, 8, ("lungs",), LABELS)
