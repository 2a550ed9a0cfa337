"""multimix predict on a multi-label run: findings at the run's thresholds, every structure's
mask, zones per finding, and one explanation map per finding called present."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from multimix.cli.app import app
from multimix.core.errors import CheckpointError
from multimix.data.io import read_image, resize_image
from multimix.data.zones import ZONES
from multimix.engine.evaluate import load_run
from multimix.tasks.findings_output import FindingsOutput, zone_phrase
from multimix.tasks.thresholds import read_thresholds
from tests.conftest import FINDINGS

runner = CliRunner()
STRUCTURES = ("lungs", "clavicles", "heart")
METHODS = ("saliency", "gradcam")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def run_with(run: Path, tmp: Path, thresholds: dict | None) -> Path:
    """A copy of ``run`` whose thresholds.json holds ``thresholds`` (None: no file)."""
    copy = tmp / "run"
    shutil.copytree(run, copy)
    (copy / "thresholds.json").unlink(missing_ok=True)
    if thresholds is not None:
        (copy / "thresholds.json").write_text(json.dumps({"thresholds": thresholds}))
    return copy


@pytest.fixture(scope="module")
def inputs(multilabel_run, tmp_path_factory) -> dict[str, tuple[int, int]]:
    """Five 32 px phantoms and one 52 x 40 (rows x columns) image: name -> original shape."""
    folder = tmp_path_factory.mktemp("ml_inputs") / "xrays"
    folder.mkdir()
    phantoms = sorted((multilabel_run["data"] / "images").glob("*.png"))
    for src in phantoms[:5]:
        shutil.copy(src, folder / src.name)
    gray = read_image(phantoms[5])
    Image.fromarray((gray * 255).astype(np.uint8)).resize((40, 52)).save(folder / "odd.png")
    shapes = {p.stem: (32, 32) for p in phantoms[:5]}
    return {"folder": folder, "shapes": shapes | {"odd": (52, 40)}}


@pytest.fixture(scope="module")
def fixed(multilabel_run, inputs, tmp_path_factory):
    """Prediction with thresholds that make effusion and opacity present on every image
    and cardiomegaly and nodule on none."""
    tmp = tmp_path_factory.mktemp("ml_fixed")
    thresholds = {"cardiomegaly": 1.0, "effusion": 0.0, "nodule": 1.0, "opacity": 0.0}
    run = run_with(multilabel_run["run"], tmp, thresholds)
    out = tmp / "pred"
    result = invoke(
        "predict", run, inputs["folder"], "--out", out, "--explain", ",".join(METHODS),
        "--batch-size", "4",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result, out


@pytest.mark.slow
def test_columns_follow_the_runs_thresholds(fixed, inputs):
    result, out = fixed
    assert "note:" not in result.output  # thresholds.json was there
    header, rows = read_csv(out / "predictions.csv")
    masks = ["lung_area_fraction", "mask_path", "clavicles_area_fraction"]
    masks += ["clavicles_mask_path", "heart_area_fraction", "heart_mask_path"]
    assert header == [
        "image", "predicted_findings", *(f"p_{f}" for f in FINDINGS), *FINDINGS, *masks, "zones"
    ]  # fmt: skip
    assert {Path(r["image"]).stem for r in rows} == set(inputs["shapes"])
    for row in rows:
        assert row["predicted_findings"] == "effusion|opacity"
        assert [row[f] for f in FINDINGS] == ["0", "1", "0", "1"]
        listed = [part.split(":", 1) for part in row["zones"].split(";")]
        assert [f for f, _ in listed] == ["effusion", "opacity"]
        for _, zones in listed:
            assert zones == "unlocalized" or set(zones.split("+")) <= set(ZONES)


@pytest.mark.slow
def test_probabilities_are_the_sigmoids_of_the_logits(fixed, inputs, multilabel_run):
    _, out = fixed
    _, model = load_run(multilabel_run["run"])
    model.eval()
    _, rows = read_csv(out / "predictions.csv")
    for row in rows:
        x = torch.from_numpy(resize_image(read_image(Path(row["image"])), 32))[None, None]
        expected = torch.sigmoid(model(x)["logits"])[0]
        got = torch.tensor([float(row[f"p_{f}"]) for f in FINDINGS])
        torch.testing.assert_close(got, expected, atol=2e-6, rtol=0)


@pytest.mark.slow
def test_one_mask_per_structure_at_the_original_size(fixed, inputs):
    _, out = fixed
    _, rows = read_csv(out / "predictions.csv")
    for row in rows:
        name = Path(row["image"]).stem
        height, width = inputs["shapes"][name]
        assert row["mask_path"] == f"masks/{name}.png"
        lungs = np.asarray(Image.open(out / row["mask_path"]))
        assert lungs.shape == (height, width) and set(np.unique(lungs)) <= {0, 255}
        assert np.array_equal(
            lungs, np.asarray(Image.open(out / "masks" / "lungs" / f"{name}.png"))
        )
        assert abs(float(row["lung_area_fraction"]) - (lungs > 0).mean()) < 1e-5
        for structure in ("heart", "clavicles"):
            assert row[f"{structure}_mask_path"] == f"masks/{structure}/{name}.png"
            mask = np.asarray(Image.open(out / row[f"{structure}_mask_path"]))
            assert mask.shape == (height, width)
            assert abs(float(row[f"{structure}_area_fraction"]) - (mask > 0).mean()) < 1e-5
        with Image.open(out / "overlays" / f"{name}.png") as overlay:
            assert overlay.mode == "RGB" and overlay.size == (width, height)


@pytest.mark.slow
def test_a_map_for_each_finding_present(fixed, inputs):
    _, out = fixed
    for method in METHODS:
        folder = out / "explanations" / method
        assert not list(folder.glob("*.png"))  # maps are filed by finding
        for finding in ("effusion", "opacity"):
            assert {p.stem for p in (folder / finding).glob("*.png")} == set(inputs["shapes"])
        for finding in ("cardiomegaly", "nodule"):
            assert not list((folder / finding).glob("*.png"))
        height, width = inputs["shapes"]["odd"]
        with Image.open(folder / "opacity" / "odd.png") as heat:
            assert heat.mode == "RGB" and heat.size == (width, height)


@pytest.mark.slow
def test_no_finding_explains_the_most_probable(multilabel_run, inputs, tmp_path):
    run = run_with(multilabel_run["run"], tmp_path, {f: 1.0 for f in FINDINGS})
    out = tmp_path / "pred"
    result = invoke("predict", run, inputs["folder"], "--out", out, "--explain", "saliency")
    assert result.exit_code == 0, result.output
    _, rows = read_csv(out / "predictions.csv")
    for row in rows:
        assert row["predicted_findings"] == "No Finding" and row["zones"] == ""
        assert [row[f] for f in FINDINGS] == ["0"] * 4
        name = Path(row["image"]).stem
        top = max(FINDINGS, key=lambda f: float(row[f"p_{f}"]))
        maps = sorted((out / "explanations" / "saliency").glob(f"*/{name}.png"))
        assert [p.parent.name for p in maps] == [top]


@pytest.mark.slow
def test_missing_thresholds_use_half_and_say_so_once(multilabel_run, inputs, tmp_path):
    run = run_with(multilabel_run["run"], tmp_path, None)
    out = tmp_path / "pred"
    result = invoke("predict", run, inputs["folder"], "--out", out, "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert result.output.count("note:") == 1
    assert "thresholds.json not found: every finding uses threshold 0.5" in result.output
    _, rows = read_csv(out / "predictions.csv")
    for row in rows:
        for f in FINDINGS:
            p = float(row[f"p_{f}"])
            if abs(p - 0.5) > 1e-5:  # the CSV rounds to 6 decimals
                assert row[f] == ("1" if p >= 0.5 else "0")


@pytest.mark.slow
def test_damaged_thresholds_are_a_one_line_error(multilabel_run, inputs, tmp_path):
    run = run_with(multilabel_run["run"], tmp_path, None)
    (run / "thresholds.json").write_text("{not json")
    result = invoke("predict", run, inputs["folder"], "--out", tmp_path / "pred")
    assert result.exit_code == 2
    assert f"error: {run / 'thresholds.json'}: is not a thresholds file" in result.output
    assert "Traceback" not in result.output


def test_read_thresholds_falls_back_per_finding(tmp_path):
    (tmp_path / "thresholds.json").write_text(json.dumps({"thresholds": {"a": 0.3}}))
    chosen, note = read_thresholds(tmp_path, ["a", "b"])
    assert chosen == {"a": 0.3, "b": 0.5}
    assert note is not None and "no threshold for b" in note
    (tmp_path / "thresholds.json").write_text(json.dumps({"thresholds": ["a"]}))
    with pytest.raises(CheckpointError, match="is not a thresholds file"):
        read_thresholds(tmp_path, ["a"])


def _lungs(size: int = 12) -> torch.Tensor:
    """Two lungs: columns 1-4 (image left: the patient's right) and 7-10, rows 0-8."""
    lungs = torch.zeros((size, size))
    lungs[0:9, 1:5] = 1
    lungs[0:9, 7:11] = 1
    return lungs


def test_zones_come_from_the_head_on_the_predicted_lungs():
    out = FindingsOutput(SimpleNamespace(localizer=object()), ["a", "b"], {"a": 0.5, "b": 0.5},
                           ["lungs", "heart"])  # fmt: skip
    assert out.zones and out.header()[-2:] == ["a", "b"]
    maps = torch.full((1, 2, 12, 12), -5.0)
    maps[0, 0, 0:3, 1:5] = 5.0  # finding a: the patient's right upper zone
    maps[0, 0, 6:9, 7:11] = 5.0  # and the left lower zone
    maps[0, 1] = 5.0  # finding b everywhere, but not present
    mask_probs = torch.stack([_lungs(), torch.zeros(12, 12)])[None]
    present = torch.tensor([[True, False]])
    assert out.zone_names(maps, mask_probs, present) == ["a:right_upper+left_lower"]
    present = torch.tensor([[True, True]])
    flat = torch.full((1, 2, 12, 12), -5.0)
    assert out.zone_names(flat, mask_probs, present) == ["a:unlocalized;b:unlocalized"]


def test_caption_and_targets():
    out = FindingsOutput(SimpleNamespace(localizer=None), ["a", "b", "c"],
                           {"a": 0.5, "b": 0.2, "c": 0.9}, ["lungs"])  # fmt: skip
    assert not out.zones
    probs = torch.tensor([[0.6, 0.3, 0.7], [0.1, 0.1, 0.2]])
    present = out.present(probs)
    assert present.tolist() == [[True, True, False], [False, False, False]]
    assert out.row_cells(probs[0], present[0])[0] == "a|b"
    assert out.row_cells(probs[1], present[1])[0] == "No Finding"
    assert out.caption(probs[0], present[0], "a:left_lower;b:unlocalized") == (
        "a 0.60 (left lower)\nb 0.30 (unlocalized)"
    )
    assert out.caption(probs[1], present[1], None) == "no finding"
    assert out.targets(probs, present) == [(0, 0), (0, 1), (1, 2)]


def test_zone_phrase():
    assert zone_phrase("left_lower") == "left lower"
    assert (
        zone_phrase("right_upper+right_middle+right_lower+left_lower") == "right lung, left lower"
    )
    assert zone_phrase("+".join(ZONES)) == "both lungs"
    assert zone_phrase("right_upper+right_lower") == "right upper/lower"
    assert zone_phrase("unlocalized") == "unlocalized"
