"""Tests for multimix.report: synthetic metrics, logs and galleries, all built in tmp_path."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from multimix.report import figures
from multimix.report.html import Gallery, SourceScores, write_report

S = 32
CLASSES = ["normal", "pneumonia"]
ODD_NAME = 'A&B <lab> "x"'


def _disc(cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:S, :S]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _gallery(source: str, *, with_true: bool = True, n: int = 3) -> Gallery:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, S, S), dtype=np.uint8)
    pred = np.stack([_disc(16, 16, 8 + i) for i in range(n)])
    true = np.stack([_disc(15, 17, 9) for _ in range(n)]) if with_true else None
    titles = [f"IM-{i:04d}.png  dice 0.9{i}  pneumonia 0.8{i}" for i in range(n)]
    return Gallery(source=source, images=images, pred_masks=pred, true_masks=true, titles=titles)


def _train_log(n: int = 30) -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        rows.append(
            {
                "step": str(10 * (i + 1)),
                "elapsed": f"{0.5 * i:.1f}",
                "lr": "0.001",
                "loss": f"{2.0 / (1 + i):.4f}",
                "loss_seg": f"{1.0 / (1 + i):.4f}" if i % 3 else "",
                "loss_cls": f"{0.8 / (1 + 0.5 * i):.4f}",
                "loss_pseudo": "",
                "pseudo_kept": "0.5" if i > 10 else "",
                "train_acc": "",
            }
        )
    return rows


def _val_log() -> list[dict[str, str]]:
    rows = []
    for k in range(3):
        rows.append(
            {
                "step": str(100 * (k + 1)),
                "score": f"{0.6 + 0.1 * k:.3f}",
                "jsrt/accuracy": "",
                "jsrt/auc": "",
                "jsrt/dice": f"{0.7 + 0.1 * k:.3f}",
                "chest/accuracy": f"{0.5 + 0.1 * k:.3f}",
                "chest/auc": f"{0.55 + 0.1 * k:.3f}" if k else "",
                "chest/dice": "",
            }
        )
    return rows


def _metrics() -> dict:
    return {
        "run": "runs/demo",
        "checkpoint": "best",
        "sources": {
            "jsrt": {
                "n_images": 3,
                "part": "test",
                "classification": {
                    "n": 3,
                    "accuracy": 0.6667,
                    "auc": None,
                    "f1_macro": 0.5,
                    "per_class": {
                        "normal": {
                            "precision": 1.0,
                            "recall": 0.5,
                            "f1": 0.6667,
                            "auc": None,
                            "support": 2,
                        },
                        "pneumonia": {
                            "precision": 0.5,
                            "recall": 1.0,
                            "f1": 0.6667,
                            "auc": None,
                            "support": 1,
                        },
                    },
                    "confusion": [[1, 1], [0, 1]],
                },
                "segmentation": {
                    "dice": 0.91234,
                    "iou": 0.84,
                    "hd95": None,
                    "lungs": {"n": 3, "dice": 0.91234, "iou": 0.84, "hd95": None},
                },
            },
            "chest": {
                "n_images": 120,
                "part": "test",
                "classification": {
                    "n": 120,
                    "accuracy": 0.875,
                    "auc": 0.95,
                    "f1_macro": 0.87,
                    "per_class": {
                        "normal": {
                            "precision": 0.9,
                            "recall": 0.8,
                            "f1": 0.85,
                            "auc": 0.95,
                            "support": 50,
                        },
                        "pneumonia": {
                            "precision": 0.87,
                            "recall": 0.93,
                            "f1": 0.9,
                            "auc": 0.95,
                            "support": 70,
                        },
                    },
                    "confusion": [[40, 10], [5, 65]],
                },
            },
            ODD_NAME: {"n_images": None, "part": None, "classification": None},
        },
    }


def _figure_refs(page: str) -> list[str]:
    return re.findall(r'src="(figures/[^"]+\.png)"', page)


def _assert_valid_pngs(out: Path, refs: list[str]) -> None:
    assert refs
    for rel in refs:
        png = out / rel
        assert png.is_file(), rel
        with Image.open(png) as im:
            assert im.format == "PNG"
            im.verify()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("report")
    galleries = [_gallery("jsrt"), _gallery("chest", with_true=False), _gallery(ODD_NAME, n=1)]
    path = write_report(
        out,
        "Demo <run> & co",
        _metrics(),
        _train_log(),
        _val_log(),
        CLASSES,
        galleries,
        notes=["checkpoint <best> selected", "a & b"],
    )
    return path, path.read_text(encoding="utf-8")


def test_report_files_and_figures(report: tuple[Path, str]) -> None:
    path, page = report
    assert path.name == "report.html" and path.is_file()
    assert (path.parent / "figures").is_dir()
    refs = _figure_refs(page)
    _assert_valid_pngs(path.parent, refs)
    names = {Path(r).name for r in refs}
    assert "training_curves.png" in names
    assert sum(n.startswith("confusion_") for n in names) == 2
    assert sum(n.startswith("gallery_") for n in names) == 3
    # no temp files left behind
    assert not [p for p in path.parent.rglob("*") if p.name.endswith(".tmp")]


def test_report_content(report: tuple[Path, str]) -> None:
    _, page = report
    assert page.startswith("<!DOCTYPE html>")
    for name in ("jsrt", "chest"):
        assert f">{name}<" in page
    assert "<li>checkpoint &lt;best&gt; selected</li>" in page
    assert "<li>a &amp; b</li>" in page
    assert "Demo &lt;run&gt; &amp; co" in page
    # 3-decimal formatting and integers
    assert ">0.912<" in page and ">0.667<" in page and ">120<" in page
    # None metrics -> n/a (jsrt AUC, HD95; odd source has nothing)
    assert ">n/a<" in page
    summary = page.split('id="summary"')[1].split('id="training"')[0]
    jsrt_row = next(r for r in summary.split("<tr>") if ">jsrt<" in r)
    assert jsrt_row.count(">n/a<") == 2  # AUC and HD95
    chest_row = next(r for r in summary.split("<tr>") if ">chest<" in r)
    assert chest_row.count(">n/a<") == 3  # no segmentation block
    # no external resources, no scripts
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_special_characters_escaped(report: tuple[Path, str]) -> None:
    _, page = report
    assert ODD_NAME not in page
    assert "A&amp;B &lt;lab&gt; &quot;x&quot;" in page
    assert "<lab>" not in page


def test_classification_only_and_empty_val_log(tmp_path: Path) -> None:
    metrics = {"sources": {"chest": _metrics()["sources"]["chest"]}}
    path = write_report(
        tmp_path / "out",
        "cls only",
        metrics,
        _train_log(5),
        [],
        CLASSES,
        [_gallery("chest", with_true=False, n=2)],
    )
    page = path.read_text(encoding="utf-8")
    _assert_valid_pngs(path.parent, _figure_refs(page))
    assert "Segmentation</h3>" not in page
    assert ">chest<" in page


def test_minimal_inputs(tmp_path: Path) -> None:
    path = write_report(tmp_path, "empty", {}, [], [], [], [])
    page = path.read_text(encoding="utf-8")
    assert _figure_refs(page) == []
    assert "No training log" in page


def test_figures_direct(tmp_path: Path) -> None:
    p1 = figures.training_curves([], [], tmp_path / "c.png")
    p2 = figures.confusion_matrix([[3, 0, 1], [0, 2, 0], [1, 1, 5]], ["a", "b"], tmp_path / "m.png")
    blank = Gallery("s", np.zeros((1, S, S), np.uint8), np.zeros((1, S, S), bool), None, [])
    p3 = figures.mask_gallery(blank, tmp_path / "g.png")
    for p in (p1, p2, p3):
        with Image.open(p) as im:
            assert im.format == "PNG"
    np.testing.assert_allclose(figures.running_mean(np.array([1.0, 3.0, 5.0]), 2), [1, 2, 4])


# --------------------------------------------------------------------------- new figures


def _explanations() -> dict:
    fractions = [k / 10 for k in range(11)]
    block = {
        "n": 8,
        "n_masked": 8,
        "lung_share_random": 0.31,
        "deletion_auc_random": 0.7,
        "fractions": fractions,
        "deletion_curve_random": [0.9 - 0.04 * k for k in range(11)],
    }
    return {
        "saliency": {
            **block,
            "lung_share": 0.62,
            "deletion_auc": 0.41,
            "deletion_curve": [0.9 * (1 - f) ** 2 + 0.1 for f in fractions],
        },
        "gradcam": {
            **block,
            "lung_share": 0.55,
            "deletion_auc": 0.48,
            "deletion_curve": [0.9 * (1 - f) + 0.05 for f in fractions],
        },
    }


def _rich_metrics() -> dict:
    metrics = _metrics()
    chest = metrics["sources"]["chest"]["classification"]
    chest["ece"] = 0.0734
    chest["calibration"] = {
        "confidence": [None] * 5 + [0.56, 0.65, 0.74, 0.86, 0.95],
        "accuracy": [None] * 5 + [0.5, 0.6, 0.8, 0.9, 0.97],
        "count": [0] * 5 + [8, 12, 20, 30, 50],
    }
    metrics["sources"]["jsrt"]["explanations"] = _explanations()
    return metrics


def _scores() -> list[SourceScores]:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 120)
    p1 = np.clip(0.3 * labels + rng.normal(0.35, 0.2, 120), 0, 1)
    return [
        SourceScores("chest", np.stack([1 - p1, p1], axis=1), labels),
        SourceScores("jsrt", dice=rng.beta(8, 1.5, 40)),
    ]


def _heat_gallery(heading: str, n: int = 4) -> Gallery:
    g = _gallery("jsrt", n=n)
    yy, xx = np.mgrid[:S, :S]
    heat = np.exp(-((yy - 12) ** 2 + (xx - 20) ** 2) / 40.0)
    g.heading, g.heatmaps, g.heatmap_name = heading, np.stack([heat] * n), "gradcam"
    return g


@pytest.fixture(scope="module")
def rich_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("rich")
    worst, best = _gallery("jsrt"), _gallery("jsrt")
    worst.heading, best.heading = "Worst segmentations", "Best segmentations"
    empty = Gallery("jsrt", np.zeros((0, S, S), np.uint8), None, None, [], "False negatives")
    galleries = [worst, best, _heat_gallery("False positives"), empty]
    path = write_report(out, "rich", _rich_metrics(), [], [], CLASSES, galleries, scores=_scores())
    return path, path.read_text(encoding="utf-8")


def test_rich_report_figures(rich_report: tuple[Path, str]) -> None:
    path, page = rich_report
    refs = _figure_refs(page)
    _assert_valid_pngs(path.parent, refs)
    names = {Path(r).name for r in refs}
    assert {"roc_chest.png", "reliability_chest.png", "dice_jsrt.png", "deletion_jsrt.png"} <= names
    assert {
        "gallery_jsrt_worst-segmentations.png",
        "gallery_jsrt_best-segmentations.png",
        "gallery_jsrt_false-positives.png",
    } <= names
    # jsrt has no calibration bins and no class scores: no reliability diagram or ROC for it
    assert "reliability_jsrt.png" not in names and "roc_jsrt.png" not in names
    assert not [p for p in path.parent.rglob("*") if p.name.endswith(".tmp")]


def test_rich_report_sections(rich_report: tuple[Path, str]) -> None:
    _, page = rich_report
    jsrt = page.split('<section id="jsrt">')[1].split("</section>")[0]
    for heading in (
        "Worst segmentations",
        "Best segmentations",
        "False positives",
        "False negatives",
        "Explanations",
    ):
        assert f"<h3>{heading}</h3>" in jsrt
    assert jsrt.index("Worst segmentations") < jsrt.index("Best segmentations")
    assert "None in this source." in jsrt  # the empty false-negative gallery
    assert "gradcam map" in jsrt
    table = jsrt.split("<h3>Explanations</h3>")[1]
    assert ">0.620<" in table and ">0.310<" in table and ">0.410<" in table
    chest = page.split('<section id="chest">')[1].split("</section>")[0]
    assert ">0.073<" in chest and "<th>ECE</th>" in chest
    assert "Positive class: pneumonia." in chest


def test_figures_of_new_kinds_direct(tmp_path: Path) -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.8 + 0.2 / 3
    out = [
        figures.roc_curves(probs, labels, ["a", "b", "c"], tmp_path / "roc3.png"),
        figures.roc_curves(probs[:, :2], np.zeros(6, int), ["a", "b"], tmp_path / "roc1.png"),
        figures.reliability_diagram({}, None, tmp_path / "rel.png", "empty"),
        figures.dice_histogram(np.array([np.nan]), tmp_path / "dice.png"),
        figures.deletion_curves({}, tmp_path / "del.png"),
    ]
    for p in out:
        with Image.open(p) as im:
            assert im.format == "PNG"


def test_roc_points_match_auc() -> None:
    scores = np.array([0.9, 0.8, 0.8, 0.4, 0.3, 0.1])
    positive = np.array([1, 1, 0, 1, 0, 0], bool)
    fpr, tpr = figures.roc_points(scores, positive)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    # pairs (positive, negative) ranked right: 3 + 2.5 (the tie at 0.8 counts half) + 2 of 9
    assert np.trapezoid(tpr, fpr) == pytest.approx(7.5 / 9)
