"""Output checks before the long work, and one-line errors when a write fails anyway."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from multimix.cli.app import app
from multimix.core.atomic import atomic_write_text
from multimix.core.errors import ConfigError, DataError
from multimix.core.writable import check_writable_dir, check_writable_file
from tests.core.fs import disk_full, make_read_only

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert ".tmp" not in lines[0]
    return lines[0]


def test_dir_checks(tmp_path, monkeypatch):
    check_writable_dir(tmp_path / "new" / "deeper")  # does not exist yet: fine
    assert not (tmp_path / "new").exists()  # and nothing was created
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"file: is a file, not a folder"):
        check_writable_dir(tmp_path / "file")
    with pytest.raises(ConfigError, match=r"cannot be created, .*file is a file"):
        check_writable_dir(tmp_path / "file" / "run")
    ro = tmp_path / "ro"
    ro.mkdir()
    make_read_only(ro, monkeypatch)
    with pytest.raises(ConfigError, match=r"ro/run: cannot write here .*(read-only|permission)"):
        check_writable_dir(ro / "run")
    assert not list(ro.iterdir())  # the probe left nothing


def test_file_checks(tmp_path, monkeypatch):
    check_writable_file(tmp_path / "metrics.json")
    with pytest.raises(ConfigError, match=r"is a folder; give a file name, e\.g\. .*metrics\.json"):
        check_writable_file(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    make_read_only(ro, monkeypatch)
    with pytest.raises(ConfigError, match=r"ro/m\.json: cannot write here"):
        check_writable_file(ro / "m.json")


def test_full_disk_names_the_users_file_not_the_temp_file(tmp_path, monkeypatch):
    disk_full(monkeypatch)
    target = tmp_path / "metrics.json"
    with pytest.raises(DataError) as err:
        atomic_write_text(target, "{}")
    assert str(err.value) == f"{target}: cannot write: no space left on device"
    assert not list(tmp_path.iterdir())  # no temp file left behind


def test_writing_onto_a_folder_is_one_line(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(DataError, match=r"out: cannot write: it is a folder"):
        atomic_write_text(tmp_path / "out", "{}")


def test_evaluate_out_naming_a_folder_fails_before_any_work(tmp_path):
    result = invoke("evaluate", tmp_path / "no-run", "--data", tmp_path, "--out", tmp_path)
    one_line_error(result, f"--out {tmp_path}: is a folder", "metrics.json")


def test_evaluate_report_in_read_only_folder(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    make_read_only(ro, monkeypatch)
    result = invoke(
        "evaluate", tmp_path / "no-run", "--data", tmp_path, "--out", tmp_path / "m.json",
        "--report", ro / "report",
    )  # fmt: skip
    one_line_error(result, f"--report {ro / 'report'}: cannot write here")


def test_train_out_is_a_file(tmp_path, phantom_dirs):
    (tmp_path / "run").write_text("not a folder")
    result = invoke(
        "train", "--out", tmp_path / "run", "--class-data", phantom_dirs["cls"], "--steps", "1"
    )
    one_line_error(result, f"{tmp_path / 'run'}: is a file, not a folder")


def test_train_out_on_read_only_file_system(tmp_path, monkeypatch, phantom_dirs):
    ro = tmp_path / "ro"
    ro.mkdir()
    make_read_only(ro, monkeypatch)
    result = invoke(
        "train", "--out", ro / "run", "--class-data", phantom_dirs["cls"], "--steps", "1"
    )
    one_line_error(result, f"{ro / 'run'}: cannot write here", "read-only")


def test_predict_out_is_a_file(tmp_path):
    (tmp_path / "pred").write_text("x")
    result = invoke("predict", tmp_path / "no-run", tmp_path, "--out", tmp_path / "pred")
    one_line_error(result, f"--out {tmp_path / 'pred'}: is a file, not a folder")


def test_phantom_and_bench_check_their_output(tmp_path):
    (tmp_path / "f").write_text("x")
    one_line_error(invoke("phantom", "--out", tmp_path / "f", "--count", "2"), "is a file")
    one_line_error(invoke("bench", "--out", tmp_path), "is a folder", "bench.json")
