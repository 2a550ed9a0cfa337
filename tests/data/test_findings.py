from __future__ import annotations

import pytest
import torch

from multimix.core.errors import ConfigError, DataError
from multimix.data.findings import (
    NEGATIVE,
    POSITIVE,
    UNCERTAIN,
    UNMENTIONED,
    FindingSpace,
    resolve,
)
from multimix.data.sources import load_source

SPACE = FindingSpace(("effusion", "edema", "nodule"))


def test_nih_convention_lists_positives_and_the_rest_are_negative():
    assert SPACE.codes("Effusion|Nodule", "x") == (POSITIVE, NEGATIVE, POSITIVE)
    assert SPACE.codes("No Finding", "x") == (NEGATIVE, NEGATIVE, NEGATIVE)


def test_explicit_convention_has_uncertain_and_unmentioned():
    codes = SPACE.codes("effusion=1|edema=-1", "x")
    assert codes == (POSITIVE, UNCERTAIN, UNMENTIONED)
    assert SPACE.codes("effusion=0.0|nodule=", "x") == (NEGATIVE, UNMENTIONED, UNMENTIONED)
    # CheXpert's "No Finding" = 1 makes the findings it does not mention negative.
    assert SPACE.codes("no finding=1|edema=-1", "x") == (NEGATIVE, UNCERTAIN, NEGATIVE)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("Effusion|Pneumothorax", "'Pneumothorax' is not one of --classes"),
        ("effusion=2", "not 1, 0, -1 or blank"),
        ("No Finding|Effusion", "has 'No Finding' and a finding"),
    ],
)
def test_bad_labels_name_the_file(raw, message):
    with pytest.raises(DataError, match=message) as err:
        SPACE.codes(raw, "labels.csv")
    assert "labels.csv" in str(err.value)


def test_label_map_and_space_checks():
    space = FindingSpace(("effusion", "edema"), {"pleural effusion": "effusion"})
    assert space.codes("Pleural Effusion", "x") == (POSITIVE, NEGATIVE)
    with pytest.raises(ConfigError):
        FindingSpace(("a", "a"))
    with pytest.raises(ConfigError):
        FindingSpace(("a",), {"b": "c"})


def test_targets_are_one_code_per_finding_and_blank_rows_unmentioned():
    assert SPACE.encode("effusion=1|edema=-1", "x") == (POSITIVE, UNCERTAIN, UNMENTIONED)
    assert SPACE.target_shape == (3,) and SPACE.blank == UNMENTIONED
    # The split's stratum tells label patterns apart.
    strata = {SPACE.stratum(s, "x") for s in ("effusion", "edema", "effusion|edema", "No Finding")}
    assert len(strata) == 4


CODES = torch.tensor([[POSITIVE, NEGATIVE, UNCERTAIN, UNMENTIONED]])


@pytest.mark.parametrize(
    ("policy", "target", "weight"),
    [
        ("ignore", [1, 0, 0, 0], [1, 1, 0, 1]),
        ("negative", [1, 0, 0, 0], [1, 1, 1, 1]),
        ("positive", [1, 0, 1, 0], [1, 1, 1, 1]),
        ("soft", [1, 0, 0.3, 0], [1, 1, 1, 1]),
    ],
)
def test_uncertainty_policies(policy, target, weight):
    t, w = resolve(CODES, policy, "negative", soft_target=0.3)
    assert t[0].tolist() == pytest.approx(target)
    assert w[0].tolist() == weight


def test_unmentioned_can_be_ignored():
    _, w = resolve(CODES, "ignore", "ignore")
    assert w[0].tolist() == [1, 1, 0, 0]
    with pytest.raises(ConfigError):
        resolve(CODES, "maybe", "ignore")


def test_chexpert_table_becomes_explicit_labels(tmp_path):
    from PIL import Image

    root = tmp_path / "chexpert"
    (root / "images").mkdir(parents=True)
    for name in ("a.png", "b.png", "c.png"):
        Image.new("L", (8, 8)).save(root / "images" / name)
    (root / "labels.csv").write_text(
        "image,Sex,Effusion,Edema,Nodule\na.png,F,1,-1,\nb.png,M,0,,1.0\nc.png,M,,,\n"
    )
    recs = load_source(root).by_name()
    assert SPACE.codes(recs["a.png"].label, "x") == (POSITIVE, UNCERTAIN, UNMENTIONED)
    assert SPACE.codes(recs["b.png"].label, "x") == (NEGATIVE, UNMENTIONED, POSITIVE)
    assert recs["c.png"].label is None  # nothing mentioned: unlabeled


def test_table_without_label_or_finding_columns_is_an_error(tmp_path):
    from PIL import Image

    root = tmp_path / "src"
    (root / "images").mkdir(parents=True)
    Image.new("L", (8, 8)).save(root / "images" / "a.png")
    (root / "labels.csv").write_text("image,Sex\na.png,F\n")
    with pytest.raises(DataError, match=r"labels\.csv.*missing column\(s\) label"):
        load_source(root)
