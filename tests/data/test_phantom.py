"""Tests for the synthetic chest radiograph generator (multimix.data.phantom).

The phantom is the ground truth behind the demo and most other tests, so these check that it is
deterministic, anatomically plausible, that opacities stay inside the lungs, that the two styles
really differ, and that ``write_source`` writes the shared folder layout with the promised counts.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from multimix.data.phantom import Phantom, make_phantom, write_source


def _phantom(seed: int, size: int = 128, pneumonia: bool = False, style: str = "adult") -> Phantom:
    return make_phantom(np.random.default_rng(seed), size=size, pneumonia=pneumonia, style=style)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) inclusive bounds of a non-empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _read_png(path: Path) -> tuple[str, np.ndarray]:
    with Image.open(path) as img:
        return img.mode, np.asarray(img)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --- make_phantom -------------------------------------------------------------------------------


@pytest.mark.parametrize("pneumonia", [False, True])
def test_same_seed_gives_identical_bytes(pneumonia: bool) -> None:
    a = _phantom(7, pneumonia=pneumonia)
    b = _phantom(7, pneumonia=pneumonia)
    assert a.image.tobytes() == b.image.tobytes()
    for key in a.masks:
        assert np.array_equal(a.masks[key], b.masks[key])
    assert a.boxes == b.boxes


def test_different_seed_gives_different_image() -> None:
    a, b = _phantom(1), _phantom(2)
    assert a.image.tobytes() != b.image.tobytes()
    assert not np.array_equal(a.masks["lungs"], b.masks["lungs"])


@pytest.mark.parametrize("size", [256, 64, 33])
@pytest.mark.parametrize("style", ["adult", "pediatric"])
def test_shapes_dtypes_and_labels(size: int, style: str) -> None:
    normal = _phantom(3, size=size, style=style)
    sick = _phantom(3, size=size, pneumonia=True, style=style)
    for ph in (normal, sick):
        assert ph.image.shape == (size, size) and ph.image.dtype == np.uint8
        assert set(ph.masks) == {"lungs", "heart", "clavicles"}
        for mask in ph.masks.values():
            assert mask.shape == (size, size) and mask.dtype == np.bool_
    assert (normal.label, normal.findings, normal.boxes) == ("normal", [], [])
    assert sick.label == "pneumonia" and sick.findings == ["opacity"]
    assert len(sick.boxes) >= 1


@pytest.mark.parametrize("style", ["adult", "pediatric"])
def test_mask_areas_are_plausible(style: str) -> None:
    for seed in range(12):
        masks = _phantom(seed, style=style, pneumonia=seed % 2 == 1).masks
        assert 0.15 <= masks["lungs"].mean() <= 0.45
        assert 0.03 <= masks["heart"].mean() <= 0.15
        assert 0.005 <= masks["clavicles"].mean() <= 0.08


def test_two_lungs_and_heart_in_the_left_lung_region() -> None:
    for seed in range(12):
        ph = _phantom(seed)
        size = ph.image.shape[0]
        lungs, heart = ph.masks["lungs"], ph.masks["heart"]
        image_left, image_right = lungs[:, : size // 2], lungs[:, size // 2 :]
        assert image_left.mean() > 0.1 and image_right.mean() > 0.1  # two lungs
        # The right lung (image left) is the larger one.
        assert image_left.sum() > image_right.sum()
        # The heart overlaps the lower medial part of the left lung (image right) region ...
        x0, y0, x1, y1 = _bbox(image_right)
        region = np.zeros_like(heart)
        region[y0 : y1 + 1, size // 2 + x0 : size // 2 + x1 + 1] = True
        assert (heart & region).sum() > 0.1 * heart.sum()
        assert _bbox(heart)[1] > (y0 + y1) / 2  # lower half
        # ... and notches the lungs: the two masks never share a pixel.
        assert not (heart & lungs).any()
        # Clavicles sit above the heart, over the lung apices.
        assert _bbox(ph.masks["clavicles"])[3] < _bbox(heart)[1]


def test_lungs_are_darker_than_heart_and_spine() -> None:
    for seed in range(8):
        ph = _phantom(seed)
        image, size = ph.image.astype(float), ph.image.shape[0]
        lungs = image[ph.masks["lungs"]].mean()
        heart = image[ph.masks["heart"]].mean()
        # Spine: a narrow central strip above the heart.
        spine = image[size // 4 : size // 2, size // 2 - 3 : size // 2 + 3].mean()
        assert lungs + 40 < heart and lungs + 40 < spine


def test_opacity_boxes_lie_inside_the_lungs() -> None:
    for seed in range(20):
        ph = _phantom(seed, pneumonia=True)
        size = ph.image.shape[0]
        x0, y0, x1, y1 = _bbox(ph.masks["lungs"])
        for finding, x, y, w, h in ph.boxes:
            assert finding == "opacity"
            assert w > 0 and h > 0
            assert x0 <= x and x + w - 1 <= x1 and y0 <= y and y + h - 1 <= y1
            assert x >= 0 and y >= 0 and x + w <= size and y + h <= size
            # Every box holds lung pixels.
            assert ph.masks["lungs"][y : y + h, x : x + w].any()


def test_opacity_only_changes_pixels_inside_the_lungs() -> None:
    # Anatomy and noise are drawn before the opacities, so the same generator state gives the same
    # patient with and without pneumonia: the difference is the opacity alone.
    for seed in range(10):
        normal = _phantom(seed)
        sick = _phantom(seed, pneumonia=True)
        lungs = sick.masks["lungs"]
        assert np.array_equal(lungs, normal.masks["lungs"])
        diff = sick.image.astype(int) - normal.image.astype(int)
        assert not diff[~lungs].any()
        # Clearly visible: inside every box, the opacity brightens the lung noticeably.
        for _, x, y, w, h in sick.boxes:
            inside = lungs[y : y + h, x : x + w]
            assert diff[y : y + h, x : x + w][inside].mean() > 8


def test_pneumonia_lungs_are_brighter_on_average() -> None:
    def lung_mean(ph: Phantom) -> float:
        return float(ph.image[ph.masks["lungs"]].mean())

    normal = [lung_mean(_phantom(1000 + i)) for i in range(20)]
    sick = [lung_mean(_phantom(2000 + i, pneumonia=True)) for i in range(20)]
    assert np.mean(sick) > np.mean(normal) + 3


def test_styles_differ() -> None:
    def stats(style: str) -> np.ndarray:
        rows = []
        for seed in range(12):
            ph = _phantom(seed, style=style)
            img = ph.image.astype(float)
            lung_fraction = ph.masks["lungs"].mean()
            # High-frequency energy: what is left after a 3x3 box blur (the noise level).
            pad = np.pad(img, 1, mode="edge")
            blur = sum(
                pad[i : i + img.shape[0], j : j + img.shape[1]] for i in range(3) for j in range(3)
            )
            rows.append(
                [
                    img.mean(),
                    np.percentile(img, 95) - np.percentile(img, 5),
                    lung_fraction,
                    np.abs(img - blur / 9).mean(),
                ]
            )
        return np.array(rows).mean(axis=0)

    adult, child = stats("adult"), stats("pediatric")
    assert child[0] > adult[0] + 8  # brighter
    assert child[1] < adult[1] - 8  # lower contrast
    assert child[2] < adult[2] - 0.05  # smaller lungs relative to the frame
    assert child[3] > adult[3] * 1.3  # noisier


@pytest.mark.parametrize("style", ["", "Adult", "martian"])
def test_make_phantom_rejects_unknown_style(style: str) -> None:
    with pytest.raises(ValueError, match="style"):
        make_phantom(np.random.default_rng(0), style=style)


@pytest.mark.parametrize("size", [0, 16, 31])
def test_make_phantom_rejects_tiny_size(size: int) -> None:
    with pytest.raises(ValueError, match="size"):
        make_phantom(np.random.default_rng(0), size=size)


# --- write_source -------------------------------------------------------------------------------


def test_write_source_layout_and_counts(tmp_path: Path) -> None:
    out = write_source(
        tmp_path / "src",
        count=20,
        seed=3,
        size=64,
        positive_fraction=0.3,
        mask_fraction=0.25,
        label_fraction=0.6,
    )
    assert out == tmp_path / "src"
    names = [f"ph3-{i:05d}.png" for i in range(20)]
    assert sorted(p.name for p in (out / "images").iterdir()) == names
    masks = sorted(p.name for p in (out / "masks").iterdir())
    assert len(masks) == 5 and set(masks) <= set(names)
    assert masks != names[:5]  # a seeded choice, not simply the first images

    meta = _read_csv(out / "meta.csv")
    assert list(meta[0]) == ["image", "patient_id", "style", "label"]
    assert [r["image"] for r in meta] == names
    assert {r["style"] for r in meta} == {"adult"}
    assert sum(r["label"] == "pneumonia" for r in meta) == 6
    assert {r["label"] for r in meta} == {"normal", "pneumonia"}
    patients = [r["patient_id"] for r in meta]
    assert patients[0] == patients[1] == "ph3-p00000" and patients[2] == "ph3-p00001"
    assert all(patients.count(p) == 2 for p in patients)

    labels = _read_csv(out / "labels.csv")
    assert list(labels[0]) == ["image", "label"]
    assert len(labels) == 12
    truth = {r["image"]: r["label"] for r in meta}
    assert all(truth[r["image"]] == r["label"] for r in labels)

    mode, image = _read_png(out / "images" / names[0])
    assert mode == "L" and image.shape == (64, 64) and image.dtype == np.uint8
    mode, mask = _read_png(out / "masks" / masks[0])
    assert mode == "L" and mask.shape == (64, 64) and set(np.unique(mask)) == {0, 255}
    text = (out / "SOURCE.md").read_text(encoding="utf-8")
    assert "synthetic" in text.lower() and "seed 3" in text and "20 images" in text


def test_write_source_is_deterministic_and_seeded(tmp_path: Path) -> None:
    a = write_source(tmp_path / "a", count=4, seed=5, size=64)
    b = write_source(tmp_path / "b", count=4, seed=5, size=64)
    c = write_source(tmp_path / "c", count=4, seed=6, size=64)
    for name in ("ph5-00000.png", "ph5-00003.png"):
        assert (a / "images" / name).read_bytes() == (b / "images" / name).read_bytes()
    assert (a / "meta.csv").read_bytes() == (b / "meta.csv").read_bytes()
    assert (a / "images" / "ph5-00000.png").read_bytes() != (
        c / "images" / "ph6-00000.png"
    ).read_bytes()


def test_write_source_mask_matches_image_and_defaults(tmp_path: Path) -> None:
    out = write_source(
        tmp_path / "d", count=3, seed=0, size=64, style="pediatric", images_per_patient=3
    )
    meta = _read_csv(out / "meta.csv")
    assert {r["patient_id"] for r in meta} == {"ph0-p00000"}
    assert {r["style"] for r in meta} == {"pediatric"}
    assert len(list((out / "masks").iterdir())) == 3  # mask_fraction defaults to 1
    assert len(_read_csv(out / "labels.csv")) == 3  # label_fraction defaults to 1
    # The written mask matches the written image: dark lungs, brighter than them the mediastinum.
    image = _read_png(out / "images" / "ph0-00000.png")[1].astype(float)
    mask = _read_png(out / "masks" / "ph0-00000.png")[1] > 0
    assert image[mask].mean() + 30 < image[8:40, 29:35].mean()


def test_write_source_rewrites_its_own_folder_but_not_a_foreign_one(tmp_path: Path) -> None:
    out = write_source(tmp_path / "e", count=4, seed=1, size=64)
    write_source(out, count=2, seed=2, size=64, mask_fraction=0.5)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["ph2-00000.png", "ph2-00001.png"]
    assert len(list((out / "masks").iterdir())) == 1
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ValueError, match="not a phantom source"):
        write_source(foreign, count=1, size=64)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"count": 0},
        {"count": -3},
        {"count": 2.5},
        {"count": 2, "positive_fraction": 1.5},
        {"count": 2, "positive_fraction": -0.1},
        {"count": 2, "mask_fraction": 2.0},
        {"count": 2, "label_fraction": float("nan")},
        {"count": 2, "style": "neonatal"},
        {"count": 2, "images_per_patient": 0},
        {"count": 2, "seed": -1},
        {"count": 2, "size": 8},
    ],
)
def test_write_source_rejects_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        write_source(tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()  # validation happens before anything is written
