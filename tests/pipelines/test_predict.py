"""multimix predict: masks, overlays and explanations at each image's own size, and a CSV."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from multimix.cli.app import app
from multimix.core.errors import DataError
from multimix.data.io import read_image
from multimix.pipelines.predict import OVERLAY_MAX_SIDE, collect_inputs, predict_paths, unique_stems
from tests.data.test_io import save_dicom

runner = CliRunner()
METHODS = ("saliency", "gradcam", "ig")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, phantom_dirs) -> Path:
    run = tmp_path_factory.mktemp("predict") / "run"
    result = invoke(
        "train", "--out", run, "--class-data", phantom_dirs["cls"],
        "--seg-data", phantom_dirs["seg"], "--labeled-class", "8", "--labeled-seg", "4",
        "--image-size", "32", "--widths", "8,16,16,32,32", "--steps", "2",
        "--val-every", "100", "--batch-size", "4",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, phantom_dirs) -> dict[str, Path]:
    """A folder of 64 px phantoms, a sub-folder repeating a name, a DICOM, a wide PNG and a
    corrupt PNG; also an extra phantom passed as a file."""
    folder = tmp_path_factory.mktemp("inputs") / "xrays"
    (folder / "more").mkdir(parents=True)
    phantoms = sorted((phantom_dirs["seg"] / "images").glob("*.png"))
    for src in phantoms[:2]:
        shutil.copy(src, folder / src.name)
    shutil.copy(phantoms[0], folder / "more" / phantoms[0].name)  # same stem, other folder
    gray = read_image(phantoms[2])
    raw = np.asarray(Image.fromarray(gray).resize((40, 52)))  # 52 rows x 40 columns
    save_dicom(folder / "scan.dcm", (raw * 4000).astype(np.uint16))
    wide = Image.fromarray((gray * 255).astype(np.uint8)).resize((1100, 300))
    wide.save(folder / "wide.png")
    rng = np.random.default_rng(0)
    (folder / "broken.png").write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    (folder / "notes.txt").write_text("not an image")
    return {"folder": folder, "file": phantoms[3]}


@pytest.fixture(scope="module")
def predicted(run_dir, inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "pred"
    result = invoke(
        "predict", run_dir, inputs["folder"], inputs["file"], "--out", out,
        "--explain", ",".join(METHODS), "--batch-size", "3",
    )  # fmt: skip
    return result, out


EXPECTED = {  # output name -> original (height, width)
    "ph12-00000": (64, 64),
    "ph12-00000-2": (64, 64),
    "ph12-00001": (64, 64),
    "ph12-00003": (64, 64),
    "scan": (52, 40),
    "wide": (300, 1100),
}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_cli_reports_and_keeps_going(predicted, inputs):
    result, out = predicted
    assert result.exit_code == 0, result.output
    assert "6 predicted, 1 failed" in result.output
    broken = inputs["folder"] / "broken.png"
    assert f"  {broken}: not a readable image" in result.output
    failures = read_csv(out / "failures.csv")
    assert [row["image"] for row in failures] == [str(broken)]
    assert failures[0]["reason"].startswith("not a readable image")


def test_every_promised_file_at_the_original_size(predicted):
    _, out = predicted
    assert {p.stem for p in (out / "masks").glob("*.png")} == set(EXPECTED)
    for name, (height, width) in EXPECTED.items():
        with Image.open(out / "masks" / f"{name}.png") as mask:
            assert mask.mode == "L" and mask.size == (width, height)
            assert set(np.unique(np.asarray(mask))) <= {0, 255}
        scale = min(1.0, OVERLAY_MAX_SIDE / max(height, width))
        with Image.open(out / "overlays" / f"{name}.png") as overlay:
            assert overlay.mode == "RGB"
            assert overlay.size == (round(width * scale), round(height * scale))
        for method in METHODS:
            with Image.open(out / "explanations" / method / f"{name}.png") as heat:
                assert heat.mode == "RGB" and heat.size == (width, height)
    assert not list(out.rglob(".*.tmp"))


def test_predictions_csv(predicted, run_dir, inputs):
    _, out = predicted
    rows = read_csv(out / "predictions.csv")
    with (out / "predictions.csv").open() as fh:
        header = fh.readline().strip().split(",")
    assert header == [
        "image", "predicted_class", "p_normal", "p_pneumonia", "lung_area_fraction", "mask_path"
    ]  # fmt: skip
    assert len(rows) == len(EXPECTED)
    folder = inputs["folder"]
    assert {row["image"] for row in rows} == {
        str(folder / "ph12-00000.png"), str(folder / "ph12-00001.png"),
        str(folder / "more" / "ph12-00000.png"), str(folder / "scan.dcm"),
        str(folder / "wide.png"), str(inputs["file"]),
    }  # fmt: skip
    for row in rows:
        probs = {c: float(row[f"p_{c}"]) for c in ("normal", "pneumonia")}
        assert abs(sum(probs.values()) - 1) < 1e-4
        assert row["predicted_class"] == max(probs, key=probs.get)
        mask = np.asarray(Image.open(out / row["mask_path"])) > 0
        assert abs(float(row["lung_area_fraction"]) - mask.mean()) < 1e-5


def test_direct_api_and_rerun_clears_old_failures(run_dir, inputs, tmp_path):
    out = tmp_path / "pred"
    summary = predict_paths(run_dir, [inputs["folder"] / "broken.png"], out, [])
    assert summary.n_ok == 0 and summary.n_failed == 1
    assert (out / "failures.csv").exists()
    summary = predict_paths(run_dir, [inputs["file"]], out, ["saliency"], device="cpu")
    assert summary.n_ok == 1 and summary.failures == []
    assert not (out / "failures.csv").exists()
    assert len(read_csv(out / "predictions.csv")) == 1


def test_nothing_predicted_exits_2(run_dir, inputs, tmp_path):
    result = invoke("predict", run_dir, inputs["folder"] / "broken.png", "--out", tmp_path / "p")
    assert result.exit_code == 2
    assert "0 predicted, 1 failed" in result.output


def test_user_errors_are_one_line(run_dir, inputs, tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("no images here")
    result = invoke("predict", run_dir, empty, "--out", tmp_path / "p")
    assert result.exit_code == 2
    assert f"error: {empty}: no image files" in result.output
    result = invoke("predict", run_dir, inputs["file"], "--out", tmp_path / "p", "--explain", "x")
    assert result.exit_code == 2
    assert "choose from saliency, gradcam, ig" in result.output
    result = invoke("predict", tmp_path / "nope", inputs["file"], "--out", tmp_path / "p")
    assert result.exit_code == 2 and "run folder not found" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(DataError, match="no image files"):
        collect_inputs([empty])


def test_unique_stems():
    paths = [Path("a/x.png"), Path("b/x.dcm"), Path("c/X.png"), Path("x-2.png"), Path("y.png")]
    assert unique_stems(paths) == ["x", "x-2", "X-3", "x-2-2", "y"]


# --------------------------------------------------------------------------- what is an input


def _copy_phantoms(phantom_dirs, folder: Path, n: int = 2) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for src in sorted((phantom_dirs["seg"] / "images").glob("*.png"))[:n]:
        shutil.copy(src, folder / src.name)
        names.append(src.name)
    return names


def test_shared_layout_folder_predicts_images_only(run_dir, phantom_dirs, tmp_path):
    data = tmp_path / "data"
    names = _copy_phantoms(phantom_dirs, data / "images")
    (data / "masks").mkdir()
    for name in names:  # lung masks: must never be predicted as radiographs
        shutil.copy(phantom_dirs["seg"] / "masks" / name, data / "masks" / name)
    save_dicom(
        data / "images" / "IM0001", (np.arange(48 * 40).reshape(48, 40) % 900).astype(np.uint16)
    )
    result = invoke("predict", run_dir, data, "--out", tmp_path / "pred")
    assert result.exit_code == 0, result.output
    assert "3 predicted, 0 failed" in result.output
    assert f"note: skipped {data / 'masks'}" in result.output
    assert f"note: predicting 3 image(s) from {data / 'images'} (shared layout)" in result.output
    rows = read_csv(tmp_path / "pred" / "predictions.csv")
    assert sorted(Path(r["image"]).name for r in rows) == sorted([*names, "IM0001"])
    assert (tmp_path / "pred" / "masks" / "IM0001.png").is_file()


@pytest.mark.parametrize("inside", [False, True], ids=["out-is-input", "out-inside-input"])
def test_predicting_twice_into_the_input_folder_never_reads_its_output(
    run_dir, phantom_dirs, tmp_path, inside
):
    folder = tmp_path / "xrays"
    names = _copy_phantoms(phantom_dirs, folder)
    out = folder / "pred" if inside else folder
    for _ in range(2):
        result = invoke("predict", run_dir, folder, "--out", out)
        assert result.exit_code == 0, result.output
        assert f"{len(names)} predicted, 0 failed" in result.output
    assert "note: skipped" in result.output
    rows = read_csv(out / "predictions.csv")
    assert sorted(Path(r["image"]).name for r in rows) == names


def test_collect_inputs_says_what_it_skipped(tmp_path, phantom_dirs):
    folder = tmp_path / "xrays"
    _copy_phantoms(phantom_dirs, folder)
    (folder / "notes.txt").write_text("x")
    earlier = folder / "old-pred"
    _copy_phantoms(phantom_dirs, earlier / "masks")
    (earlier / "predictions.csv").write_text("image\n")
    _copy_phantoms(phantom_dirs, earlier)  # images directly in an earlier output: skipped too
    notes: list[str] = []
    paths = collect_inputs([folder], out=tmp_path / "elsewhere", notes=notes)
    assert [p.parent for p in paths] == [folder, folder]
    assert f"skipped {earlier} (not inputs: masks or prediction output)" in notes
    assert f"skipped 1 non-image file(s) in {folder}: notes.txt" in notes
