from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from multimix.core.errors import DataError
from multimix.data.io import write_png
from multimix.data.sources import load_source


def _img(path: Path, value: int = 100) -> None:
    write_png(path, np.full((8, 8), value, dtype=np.uint8))


def _shared(root: Path, names=("a.png", "b.png")) -> Path:
    for n in names:
        _img(root / "images" / n)
    return root


def test_shared_layout_reads_labels_patients_and_structures(tmp_path):
    root = _shared(tmp_path / "src", ("a.png", "b.png", "c.png"))
    (root / "labels.csv").write_text("image,label\na.png,Normal\nb.png,pneumonia\n")
    (root / "meta.csv").write_text("image,patient_id,split_group\na.png,p1,g1\nb.png,p1,\n")
    write_png(root / "masks" / "a.png", np.zeros((8, 8), bool))
    write_png(root / "masks" / "heart" / "b.png", np.zeros((8, 8), bool))
    source = load_source(root)
    recs = source.by_name()
    assert source.layout == "shared" and source.name == "src"
    assert recs["a.png"].label == "Normal" and recs["c.png"].label is None
    assert recs["a.png"].patient == "g1" and recs["b.png"].patient == "p1"
    assert recs["c.png"].patient == "c"  # no meta row: its own patient
    assert set(recs["a.png"].masks) == {"lungs"} and set(recs["b.png"].masks) == {"heart"}
    assert source.structures == ("lungs", "heart")


def test_class_folder_and_plain_layouts(tmp_path):
    _img(tmp_path / "cf" / "NORMAL" / "x 1.png")
    _img(tmp_path / "cf" / "PNEUMONIA" / "ü.png")
    source = load_source(tmp_path / "cf")
    assert source.layout == "class-folders"
    assert sorted(r.label for r in source.records) == ["NORMAL", "PNEUMONIA"]
    _img(tmp_path / "plain" / "one.png")
    plain = load_source(tmp_path / "plain")
    assert plain.layout == "plain" and plain.records[0].label is None


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("img,label\na.png,normal\n", "missing column(s) image"),
        ("image,label\nzzz.png,normal\n", "'zzz.png', which is not in images/"),
        ("image,label\na.png,normal\na.png,pneumonia\n", "listed twice"),
    ],
)
def test_bad_labels_csv(tmp_path, labels, message):
    root = _shared(tmp_path / "s")
    (root / "labels.csv").write_text(labels)
    with pytest.raises(DataError, match=r"labels\.csv") as err:
        load_source(root)
    assert message in str(err.value)


def test_non_utf8_labels_csv(tmp_path):
    root = _shared(tmp_path / "s")
    (root / "labels.csv").write_bytes(b"image,label\na.png,norm\xe9al\n")
    with pytest.raises(DataError, match="not UTF-8"):
        load_source(root)


def test_duplicate_identical_rows_are_accepted(tmp_path):
    root = _shared(tmp_path / "s")
    (root / "labels.csv").write_text("image,label\na.png,normal\na.png,normal\n")
    assert load_source(root).by_name()["a.png"].label == "normal"


def test_mask_without_image_names_the_mask(tmp_path):
    root = _shared(tmp_path / "s")
    write_png(root / "masks" / "orphan.png", np.zeros((8, 8), bool))
    with pytest.raises(DataError, match=r"orphan\.png: mask has no image"):
        load_source(root)


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_source(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        load_source(tmp_path / "nope")
    (tmp_path / "s" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="images: no images found"):
        load_source(tmp_path / "s")
