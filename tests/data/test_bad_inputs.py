"""The bad-input corpus: every kind of broken file, row or folder a user may hand us.

Each case is written into a clean source in tmp_path at test time and goes through the public
entry points (``load_sources`` + ``check_sources``, and the ``multimix`` CLI). Under
``--on-bad-input error`` it must stop with one line naming the file; under ``skip`` it must be
left out, counted and listed, and everything else must still be used.
"""

from __future__ import annotations

import csv
import json
import os
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from multimix.cli.app import app
from multimix.config import TrainConfig
from multimix.core.batch import LABELED, MASKED
from multimix.core.errors import DataError, printable_path
from multimix.data.assemble import assemble, check_sources, load_sources, make_split
from multimix.data.bad_inputs import BadInputs
from multimix.data.io import write_png
from multimix.data.labels import LabelSpace
from multimix.engine.trainer import Trainer
from tests.data.test_io import png_with_size, save_dicom

LABELS = LabelSpace(("normal", "pneumonia"))
SIZE = 32
N_CLEAN = 12
CLEAN = {f"img{i:02d}.png" for i in range(N_CLEAN)}
CLEAN_24 = {f"img{i:02d}.png" for i in range(24)}
VICTIM = "img03.png"  # the clean image a case breaks (its label is pneumonia)
SMALL = ["--image-size", "32", "--widths", "8,16,16,32,32", "--batch-size", "4"]


def clean_source(root: Path, n: int = N_CLEAN, seed: int = 0) -> Path:
    """A shared-layout source: noise images, a lung mask and a label for each."""
    rng = np.random.default_rng(seed)
    rows = ["image,label"]
    for i in range(n):
        name = f"img{i:02d}.png"
        write_png(root / "images" / name, rng.random((SIZE, SIZE)))
        mask = np.zeros((SIZE, SIZE), bool)
        mask[6:26, 4 + i % 5 : 28] = True
        write_png(root / "masks" / name, mask)
        rows.append(f"{name},{'pneumonia' if i % 2 else 'normal'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def prepare(roots: list[Path], policy: str) -> tuple[dict, object, BadInputs]:
    """What ``multimix train`` does before splitting: list, then decode and check everything."""
    bad = BadInputs(policy)
    folders = [str(r) for r in roots]
    sources, roles = load_sources({"class": folders[:1], "seg": folders[:1],
                                   "unlabeled": folders[1:]}, bad)  # fmt: skip
    sources, bank = check_sources(sources, roles, LABELS, SIZE, ("lungs",), bad)
    return sources, bank, bad


# ----------------------------------------------------------------------------- the corpus


def _cut(path: Path, keep: float | int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])


def _noise_image(path: Path, fmt: str) -> Path:
    pixels = np.random.default_rng(3).integers(0, 256, (64, 64), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def zero_bytes(name: str) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        (root / "images" / name).write_bytes(b"")
        return root / "images" / name

    return make


def truncated_png(root: Path) -> Path:
    path = _noise_image(root / "images" / VICTIM, "PNG")
    _cut(path, 0.5)
    return path


def truncated_jpg(root: Path) -> Path:
    path = _noise_image(root / "images" / "cut.jpg", "JPEG")
    _cut(path, 0.5)
    return path


def truncated_dcm(root: Path) -> Path:
    path = save_dicom(root / "images" / "cut.dcm", np.zeros((32, 32), np.uint16))
    _cut(path, 200)  # the header survives, the pixel data does not
    return path


def random_bytes(name: str) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        path = root / "images" / name
        path.write_bytes(np.random.default_rng(1).bytes(4096))
        return path

    return make


def bomb_png(width: int) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        return png_with_size(root / "images" / f"bomb{width}.png", width, width)

    return make


def bomb_dcm(root: Path) -> Path:
    pixels = np.zeros((4, 4), np.uint16)
    return save_dicom(root / "images" / "bomb.dcm", pixels, Rows=20_000, Columns=20_000)


def mask_grey(root: Path) -> Path:
    path = root / "masks" / VICTIM
    Image.fromarray(np.full((SIZE, SIZE), 128, np.uint8)).save(path)
    return path


def mask_label_map(root: Path) -> Path:
    path = root / "masks" / VICTIM
    Image.fromarray(np.arange(SIZE * SIZE, dtype=np.uint8).reshape(SIZE, SIZE) % 3).save(path)
    return path


def mask_other_size(root: Path) -> Path:
    path = root / "masks" / VICTIM
    write_png(path, np.zeros((SIZE // 2, SIZE), bool))
    return path


def mask_truncated(root: Path) -> Path:
    path = root / "masks" / VICTIM
    _cut(path, 0.5)
    return path


def mask_without_image(root: Path) -> Path:
    write_png(root / "masks" / "orphan.png", np.zeros((SIZE, SIZE), bool))
    return root / "masks" / "orphan.png"


def _edit_labels(root: Path, old: bytes, new: bytes) -> Path:
    path = root / "labels.csv"
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new))
    return path


def unknown_label(root: Path) -> Path:
    _edit_labels(root, b"img03.png,pneumonia", b"img03.png,covid")
    return root / "images" / VICTIM  # the error names the image whose label it is


def conflicting_rows(root: Path) -> Path:
    return _edit_labels(root, b"img03.png,pneumonia\n", b"img03.png,pneumonia\nimg03.png,normal\n")


def row_without_image(root: Path) -> Path:
    return _edit_labels(root, b"img03.png,pneumonia\n", b"img03.png,pneumonia\nghost.png,normal\n")


def non_utf8_row(root: Path) -> Path:
    return _edit_labels(root, b"img03.png,pneumonia", b"img03.png,pneumon\xefa")


def non_utf8_file_name(root: Path) -> Path:
    path = Path(os.fsdecode(bytes(root / "images") + b"/scan \xff\xfe.png"))
    write_png(path, np.zeros((SIZE, SIZE), np.uint8))
    return path


@dataclass(frozen=True)
class Case:
    make: Callable[[Path], Path]  # breaks a clean source; returns the file the error names
    message: str  # regex the one-line reason must match
    left_out: frozenset[str] = field(default_factory=frozenset)  # clean images skip drops
    unlabeled: frozenset[str] = field(default_factory=frozenset)  # clean images losing a label


DROP = frozenset({VICTIM})
CASES = {
    "zero-byte png": Case(zero_bytes(VICTIM), r"empty file \(0 bytes\)", DROP),
    "zero-byte jpg": Case(zero_bytes("extra.jpg"), r"empty file"),
    "zero-byte dcm": Case(zero_bytes("extra.dcm"), r"empty file"),
    "truncated png": Case(truncated_png, r"not a readable image", DROP),
    "truncated jpg": Case(truncated_jpg, r"not a readable image"),
    "truncated dcm": Case(truncated_dcm, r"truncated|not a readable image"),
    "random-byte png": Case(random_bytes("noise.png"), r"not a readable image"),
    "random-byte jpg": Case(random_bytes("noise.jpg"), r"not a readable image"),
    "random-byte dcm": Case(random_bytes("noise.dcm"), r"not a readable image"),
    "bomb png 49 MP": Case(bomb_png(7000), r"7000x7000 = 49,000,000 pixels.*decompression bomb"),
    "bomb png 10 GP": Case(bomb_png(100_000), r"decompression bomb"),
    "bomb dcm": Case(bomb_dcm, r"20000x20000.*decompression bomb"),
    "grey mask": Case(mask_grey, r"mask is not binary: found values 128", DROP),
    "label-map mask": Case(mask_label_map, r"mask is not binary: found values 0, 1, 2", DROP),
    "mask of other size": Case(mask_other_size, r"mask is 32x16 but its image is 32x32", DROP),
    "truncated mask": Case(mask_truncated, r"not a readable image", DROP),
    "mask without image": Case(mask_without_image, r"mask has no image of the same name"),
    "unknown label": Case(unknown_label, r"label 'covid' is not one of the classes", DROP),
    "conflicting rows": Case(conflicting_rows, r"line 6: 'img03.png' is listed twice", DROP),
    "row without image": Case(row_without_image, r"line 6 names 'ghost.png', which is not in"),
    "non-UTF-8 row": Case(non_utf8_row, r"line 5 is not UTF-8", unlabeled=DROP),
    "non-UTF-8 file name": Case(non_utf8_file_name, r"file name is not valid UTF-8"),
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request, tmp_path) -> tuple[Case, Path, Path]:
    spec = CASES[request.param]
    root = clean_source(tmp_path / "src")
    return spec, root, spec.make(root)


def test_error_is_one_line_naming_the_file(case):
    spec, root, bad_file = case
    with pytest.raises(DataError) as err:
        prepare([root], "error")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(printable_path(bad_file) + ": "), message
    assert re.search(spec.message, message), message
    assert "--on-bad-input skip" in message


def test_skip_leaves_out_exactly_the_bad_input_and_lists_it(case):
    spec, root, bad_file = case
    sources, bank, bad = prepare([root], "skip")
    assert len(bad) == 1, bad.skipped
    file, reason = bad.skipped[0]
    assert file == printable_path(bad_file)
    assert re.search(spec.message, reason), reason
    assert {r.name for r in bank.records} == CLEAN - spec.left_out
    assert [r.name for r in sources[root.name].records] == [r.name for r in bank.records]
    labeled = {r.name for r, y in zip(bank.records, bank.labeled, strict=True) if y}
    assert labeled == CLEAN - spec.left_out - spec.unlabeled
    assert bool(bank.known.all())  # every image kept has its (good) mask
    csv_rows = list(csv.reader(bad.csv_text().splitlines()))
    assert csv_rows == [["file", "reason"], [file, reason]]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"img,label\n", r"missing column\(s\) image; found \['img', 'label'\]"),
        (b"image;label\n", r"missing column\(s\) image\b.*found \[.image;label.\]"),
        (b"\xffimage,label\n", r"line 1 is not UTF-8"),
    ],
)
@pytest.mark.parametrize("policy", ["error", "skip"])
def test_unusable_labels_csv_is_an_error_even_under_skip(tmp_path, header, message, policy):
    """Skipping a whole labels.csv would quietly turn a labeled set into an unlabeled one."""
    root = clean_source(tmp_path / "src")
    lines = (root / "labels.csv").read_bytes().split(b"\n", 1)
    (root / "labels.csv").write_bytes(header + lines[1])
    with pytest.raises(DataError, match=message) as err:
        prepare([root], policy)
    assert str(err.value).startswith(f"{root / 'labels.csv'}: ")


def test_empty_folder(tmp_path):
    root = clean_source(tmp_path / "src")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no images found"):
        prepare([root, tmp_path / "empty"], "error")
    sources, bank, bad = prepare([root, tmp_path / "empty"], "skip")
    assert set(sources) == {"src"} and len(bank) == N_CLEAN
    assert [f for f, _ in bad.skipped] == [str(tmp_path / "empty")]
    (tmp_path / "empty" / "images").mkdir()  # shared layout with nothing in images/
    _, _, bad = prepare([root, tmp_path / "empty"], "skip")
    assert [f for f, _ in bad.skipped] == [str(tmp_path / "empty" / "images")]
    with pytest.raises(DataError, match="does not exist"):  # a typo is never skipped
        prepare([root, tmp_path / "emtpy"], "skip")


def test_every_image_bad_leaves_nothing_to_train_on(tmp_path):
    root = clean_source(tmp_path / "src", n=3)
    for path in (root / "images").iterdir():
        path.write_bytes(b"")
    sources, bank, bad = prepare([root], "skip")
    assert sources == {} and len(bank) == 0 and len(bad) == 3


def test_names_with_spaces_and_non_ascii_just_work(tmp_path):
    """Spaces, umlauts, CJK; the file named in decomposed Unicode (as macOS writes it) while
    labels.csv spells it composed: both must match, under either policy."""
    root = clean_source(tmp_path / "src")
    composed = "thorax ü 胸部 (1).png"
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    for sub in ("images", "masks"):
        (root / sub / VICTIM).rename(root / sub / decomposed)
    _edit_labels(root, b"img03.png", composed.encode())
    for policy in ("error", "skip"):
        _, bank, bad = prepare([root], policy)
        assert len(bad) == 0 and len(bank) == N_CLEAN
        rec = {r.name: (i, r) for i, r in enumerate(bank.records)}[decomposed]
        assert bank.targets[rec[0]] == LABELS.index("pneumonia", "") and bank.known[rec[0]].all()


def test_labels_are_compared_case_insensitively_and_empty_labels_never_conflict(tmp_path):
    root = clean_source(tmp_path / "src")
    _edit_labels(
        root,
        b"img03.png,pneumonia\n",
        b"img03.png,\nimg03.png,Pneumonia\nimg03.png,PNEUMONIA\nimg03.png,\n",
    )
    _, bank, bad = prepare([root], "error")
    assert len(bad) == 0 and len(bank) == N_CLEAN


def test_skips_come_before_the_split_so_labeled_counts_hold(tmp_path):
    """The labeled subsets are chosen among usable images only: asking for 6 gives 6."""
    root = clean_source(tmp_path / "src", n=40)
    bad_names = [f"img{i:02d}.png" for i in range(0, 40, 3)]
    for name in bad_names:
        (root / "images" / name).write_bytes(b"\x89PNG broken")
    sources, bank, bad = prepare([root], "skip")
    roles = {"src": ["class", "seg"]}
    split = make_split(sources, roles, LABELS, 6, 5, 0.1, 0.2, seed=0)
    data = assemble(sources, split, LABELS, SIZE, ("lungs",), bank)
    assert len(bad) == len(bad_names)
    assert len(data.rows[LABELED]) == 6 and len(data.rows[MASKED]) == 5
    named = {n for part in ("train", "val", "test") for n in split["sources"]["src"][part]}
    assert named == {f"img{i:02d}.png" for i in range(40)} - set(bad_names)
    test_part = set(split["sources"]["src"]["test"])
    assert test_part and test_part.isdisjoint(r.name for r in data.bank.records)
    # The bank's rows are the checked decodes, not a second read of the files.
    index = bank.index()
    for i, rec in enumerate(data.bank.records):
        assert torch.equal(data.bank.images[i], bank.images[index[(rec.source, rec.name)]])


# ----------------------------------------------------------------------------- whole runs


def _split_of(root: Path) -> dict:
    sources, _, _ = prepare([root], "error")
    return make_split(sources, {"src": ["class", "seg"]}, LABELS, None, None, 0.1, 0.2, seed=0)


def test_a_bad_image_in_the_test_part_stops_training_before_it_starts(tmp_path):
    """The test part is never trained on, yet its files are checked at start too."""
    root = clean_source(tmp_path / "src", n=20)
    victim = _split_of(root)["sources"]["src"]["test"][0]
    _cut(root / "images" / victim, 0.4)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "--out", str(run), "--class-data", str(root), "--seg-data", str(root),
        "--steps", "2", *SMALL,
    ])  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith(f"error: {root / 'images' / victim}: not a readable image")
    assert "Traceback" not in result.output
    assert not (run / "checkpoints").exists()


@pytest.mark.slow
def test_train_evaluate_predict_skip_count_and_list_bad_inputs(tmp_path):
    root = clean_source(tmp_path / "Röntgen bilder", n=24)  # spaces, non-ASCII: just work
    spaced = "thorax ü 胸部 (1).png"
    for sub in ("images", "masks"):
        (root / sub / "img06.png").rename(root / sub / spaced)
    _edit_labels(root, b"img06.png", spaced.encode())
    expected = {}
    for make in (zero_bytes(VICTIM), truncated_jpg, random_bytes("noise.dcm"), mask_without_image,
                 non_utf8_file_name, bomb_png(7000)):  # fmt: skip
        expected[printable_path(make(root))] = make.__name__
    Image.fromarray(np.full((SIZE, SIZE), 128, np.uint8)).save(root / "masks" / "img04.png")
    expected[str(root / "masks" / "img04.png")] = "grey mask"
    _edit_labels(root, b"img05.png,pneumonia", b"img05.png,covid")
    expected[str(root / "images" / "img05.png")] = "unknown label"
    (tmp_path / "empty").mkdir()
    expected[str(tmp_path / "empty")] = "empty folder"
    left_out = {VICTIM, "img04.png", "img05.png"}

    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "--out", str(run), "--class-data", str(root), "--seg-data", str(root),
        "--unlabeled-data", str(tmp_path / "empty"), "--steps", "2", "--val-every", "2",
        "--on-bad-input", "skip", *SMALL,
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"skipped {len(expected)} bad input(s)" in result.output
    with (run / "skipped.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["file"] for r in rows} == set(expected)
    assert all(r["reason"] for r in rows)
    assert json.loads((run / "config.json").read_text())["on_bad_input"] == "skip"
    split = json.loads((run / "split.json").read_text())["sources"][root.name]
    named = {n for part in ("train", "val", "test") for n in split[part]}
    assert named == (CLEAN_24 - {"img06.png"} | {spaced}) - left_out
    assert (run / "checkpoints" / "best.safetensors").exists()

    # Evaluate on the same folder (its listing problems are met again) and on a cross-domain
    # folder with a broken file; under error the same folder stops evaluation in one line.
    other = clean_source(tmp_path / "other", n=6, seed=1)
    _cut(other / "images" / "img02.png", 0.5)
    out, report = tmp_path / "metrics.json", tmp_path / "report"
    result = CliRunner().invoke(app, [
        "evaluate", str(run), "--data", str(root), "--data", str(other), "--out", str(out),
        "--report", str(report), "--on-bad-input", "skip",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    skipped = {s["file"] for s in metrics["skipped"]}
    listing = {
        printable_path(root / "masks" / "orphan.png"),
        next(f for f in expected if "\\xff" in f),
    }
    assert skipped == listing | {str(other / "images" / "img02.png")}
    assert metrics["sources"]["other"]["n_images"] == 5
    assert f"skipped {len(skipped)} bad input(s)" in result.output
    page = (report / "report.html").read_text()
    assert f"Training left out {len(expected)} bad input(s)" in page
    assert f"This evaluation left out {len(skipped)} bad input(s)" in page
    result = CliRunner().invoke(
        app, ["evaluate", str(run), "--data", str(other), "--out", str(out)]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"error: {other / 'images' / 'img02.png'}: not a readable image" in result.output

    # predict goes on past bad files and lists them (failures.csv), as it always has.
    result = CliRunner().invoke(app, ["predict", str(run), str(root / "images"), "--out",
                                      str(tmp_path / "pred")])  # fmt: skip
    assert result.exit_code == 0, result.output
    with (tmp_path / "pred" / "failures.csv").open(newline="", encoding="utf-8") as fh:
        failed = {r["image"] for r in csv.DictReader(fh)}
    assert failed == {f for f in expected if "/images/" in f and "img05" not in f}
    assert (tmp_path / "pred" / "masks" / f"{Path(spaced).stem}.png").exists()


@pytest.mark.slow
def test_nothing_is_read_from_disk_once_training_has_started(tmp_path):
    """Everything is decoded before step 1: files destroyed afterwards cannot stop the run."""
    root = clean_source(tmp_path / "src", n=16)
    cfg = TrainConfig(
        out=str(tmp_path / "run"), method="multimix", class_data=[str(root)],
        seg_data=[str(root)], image_size=SIZE, widths=[8, 16, 16, 32, 32], batch_size=4,
        steps=2, val_every=2, seed=0,
    )  # fmt: skip
    Path(cfg.out).mkdir()
    trainer = Trainer(cfg)
    for path in root.rglob("*"):
        if path.is_file():
            path.write_bytes(b"")
    assert trainer.fit() == Path(cfg.out)
    assert trainer.step == 2 and (Path(cfg.out) / "checkpoints" / "last.safetensors").exists()


def test_policy_is_checked(tmp_path):
    result = CliRunner().invoke(app, [
        "train", "--out", str(tmp_path / "r"), "--class-data", str(tmp_path),
        "--on-bad-input", "ignore",
    ])  # fmt: skip
    assert result.exit_code == 2
    assert "error: --on-bad-input must be one of error, skip, not 'ignore'" in result.output
