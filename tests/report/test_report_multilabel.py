"""The evaluation report of a multi-label run: per-finding table and ROC curves, localization,
segmentation per structure, and galleries of per-finding errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from multimix.cli.app import app
from multimix.data.findings import NEGATIVE, POSITIVE, UNCERTAIN, UNMENTIONED
from multimix.engine.inference import Predictions
from multimix.report import figures
from multimix.report.html import SourceScores, write_report
from multimix.tasks.multilabel import finding_errors, findings_text
from tests.conftest import FINDINGS

runner = CliRunner()


def _section(page: str, anchor: str) -> str:
    return page.split(f'<section id="{anchor}">')[1].split("</section>")[0]


def _row(html: str, first_cell: str) -> list[str]:
    """The cells after the first of the table row whose first cell is ``first_cell``."""
    row = next(r for r in html.split("<tr>") if r.startswith(f"<td>{first_cell}</td>"))
    return re.findall(r"<td[^>]*>([^<]*)</td>", row)[1:]


@pytest.fixture(scope="module")
def evaluated(multilabel_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("ml_report")
    args = [
        "evaluate", multilabel_run["run"], "--data", multilabel_run["data"],
        "--out", out / "metrics.json", "--report", out / "report",
    ]  # fmt: skip
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics, out / "report", (out / "report" / "report.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_report_shows_the_multilabel_table(evaluated):
    metrics, _, page = evaluated
    block = metrics["sources"]["ml"]
    section = _section(page, "ml")
    assert "<h3>Findings (multi-label)</h3>" in section
    assert "region value" not in page  # its method judges images on no region of theirs
    assert "<h3>Classification</h3>" not in section
    for finding in FINDINGS:
        stats = block["multilabel"]["per_finding"][finding]
        cells = _row(section, finding)
        expected = [stats["auc"], stats["threshold"], stats["precision"], stats["recall"]]
        expected += [stats["f1"]]
        assert cells[:5] == ["n/a" if v is None else f"{v:.3f}" for v in expected]
        assert cells[5:7] == [str(stats["support"]), str(stats["n"])]
    summary = page.split('id="summary"')[1].split('id="training"')[0]
    assert f">{block['multilabel']['mean_auc']:.3f}<" in _row_html(summary, "ml")


def _row_html(html: str, source: str) -> str:
    return next(r for r in html.split("<tr>") if f">{source}<" in r)


@pytest.mark.slow
def test_report_shows_localization_and_every_structure(evaluated):
    metrics, _, page = evaluated
    block = metrics["sources"]["ml"]
    section = _section(page, "ml")
    loc = block["localization"]
    assert "<h3>Localization</h3>" in section
    hits = _row(section, "boxes found")
    assert hits == ["n/a" if v is None else f"{v:.3f}" for v in loc["box_iou_hit"].values()]
    overview = section.split("<h3>Localization</h3>")[1]
    assert f">{loc['n_boxes']}<" in overview and "localization head" in overview
    for structure in ("lungs", "heart", "clavicles"):
        dice = block["segmentation"][structure]["dice"]
        assert _row(section, structure)[1] == f"{dice:.3f}"


@pytest.mark.slow
def test_report_figures_and_galleries(evaluated):
    _, report, page = evaluated
    refs = re.findall(r'src="(figures/[^"]+\.png)"', page)
    names = {Path(r).name for r in refs}
    assert "roc_ml.png" in names and "training_curves.png" in names
    assert {"gallery_ml_worst-segmentations.png", "gallery_ml_best-segmentations.png"} <= names
    for rel in refs:
        with Image.open(report / rel) as im:
            assert im.format == "PNG"
    section = _section(page, "ml")
    assert "<h3>False positives</h3>" in section and "<h3>False negatives</h3>" in section


def test_write_report_renders_a_multilabel_block(tmp_path):
    metrics = {
        "classes": ["a", "b"],
        "sources": {
            "src": {
                "n_images": 5,
                "multilabel": {
                    "n": 5, "mean_auc": 0.75, "f1_macro": None,
                    "per_finding": {
                        "a": {"auc": 0.75, "threshold": 0.4, "precision": 0.5, "recall": 1.0,
                              "f1": 0.6667, "support": 2, "n": 4},
                        "b": {"auc": None, "threshold": 0.5, "precision": None, "recall": None,
                              "f1": None, "support": 0, "n": 5},
                    },
                },
                "localization": {"n_boxes": 3, "cam": "classifier_cam", "mean_iou": 0.2,
                                 "zone_accuracy": None,
                                 "box_iou_hit": {"0.1": 0.6667, "0.5": None}},
            }
        },
    }  # fmt: skip
    probs = np.array([[0.9, 0.1], [0.6, 0.2], [0.3, 0.4], [0.2, 0.3], [0.1, 0.2]])
    codes = np.array([[1, 0], [0, 0], [1, 0], [0, 0], [2, 0]])
    scores = [SourceScores("src", probs=probs, codes=codes)]
    path = write_report(tmp_path, "ml", metrics, [], [], ["a", "b"], [], scores=scores)
    section = _section(path.read_text(encoding="utf-8"), "src")
    assert _row(section, "a") == ["0.750", "0.400", "0.500", "1.000", "0.667", "2", "4"]
    assert _row(section, "b") == ["n/a", "0.500", "n/a", "n/a", "n/a", "0", "5"]
    assert _row(section, "boxes found") == ["0.667", "n/a"]
    assert "classifier CAM" in section and "No metrics" not in section
    assert (tmp_path / "figures" / "roc_src.png").is_file()


def test_finding_roc_curves_draw_certain_labels_only(tmp_path):
    probs = np.array([[0.9], [0.2], [0.8], [0.1]])
    codes = np.array([[POSITIVE], [NEGATIVE], [UNCERTAIN], [UNMENTIONED]])
    path = figures.finding_roc_curves(probs, codes, ["a"], tmp_path / "roc.png")
    with Image.open(path) as im:
        assert im.format == "PNG"
    only_uncertain = np.array([[UNCERTAIN], [UNCERTAIN], [NEGATIVE], [NEGATIVE]])
    figures.finding_roc_curves(probs, only_uncertain, ["a"], tmp_path / "empty.png")


def test_finding_errors_pair_images_with_findings():
    codes = [
        (NEGATIVE, POSITIVE),  # a: false positive at 0.9; b: found
        (UNCERTAIN, POSITIVE),  # a: not scored; b: false negative at 0.1
        (NEGATIVE, UNMENTIONED),  # a: false positive at 0.7; b: not scored
    ]
    bank = SimpleNamespace(
        targets=torch.tensor([*codes, (UNMENTIONED, UNMENTIONED)]),
        labeled=torch.tensor([True, True, True, False]),
    )
    probs = torch.tensor([[0.9, 0.8], [0.95, 0.1], [0.7, 0.05], [0.99, 0.99]])
    preds = Predictions(probs, torch.zeros(0), None)
    errors = finding_errors(bank, preds, ["a", "b"], {"a": 0.5, "b": 0.5})
    (fp, _, fp_rows, fp_cols), (fn, _, fn_rows, fn_cols) = errors
    assert (fp, fp_rows.tolist(), fp_cols.tolist()) == ("False positives", [0, 2], [0, 0])
    assert (fn, fn_rows.tolist(), fn_cols.tolist()) == ("False negatives", [1], [1])
    assert findings_text(probs[0], ["a", "b"], {"a": 0.95, "b": 0.5}) == "b 0.80"
    assert findings_text(probs[2], ["a", "b"], {"a": 0.95, "b": 0.5}) == (
        "no finding (top: a 0.70)"
    )
