"""One process per run folder, tested with real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from multimix.cli.app import app
from multimix.core.errors import ConfigError
from multimix.core.runlock import LOCK_NAME, holder, run_lock

SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}

HOLD = textwrap.dedent(
    """
    import sys, time
    from multimix.core.runlock import run_lock
    with run_lock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.readline()  # hold until told (or killed)
    """
)
TRY = textwrap.dedent(
    """
    import sys
    from multimix.core.errors import ConfigError
    from multimix.core.runlock import run_lock
    try:
        with run_lock(sys.argv[1]):
            print("got it")
    except ConfigError as exc:
        print(f"error: {exc}")
    """
)


@pytest.fixture
def held(tmp_path):
    """A run folder locked by another live process; yields (run, process)."""
    run = tmp_path / "run"
    run.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield run, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def _try(run: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", TRY, str(run)], capture_output=True, text=True, env=ENV, timeout=60
    )
    return done.stdout.strip()


def test_second_process_is_refused_with_the_holders_pid(held):
    run, proc = held
    assert _try(run) == (
        f"error: {run} is in use by process {proc.pid}; wait for it to finish, "
        "or stop it, before starting another training in this folder"
    )
    assert holder(run) == proc.pid
    with pytest.raises(ConfigError, match=rf"is in use by process {proc.pid}"), run_lock(run):
        pass


def test_lock_is_released_on_exit_and_after_a_kill(held):
    run, proc = held
    proc.kill()  # SIGKILL: no cleanup runs, the pid stays in the lock file
    proc.wait(timeout=30)
    assert (run / LOCK_NAME).read_text().strip() == str(proc.pid)  # a stale lock file...
    assert holder(run) is None  # ...that holds nothing
    assert _try(run) == "got it"


def test_released_on_an_exception(tmp_path):
    with pytest.raises(RuntimeError), run_lock(tmp_path):
        assert holder(tmp_path) == os.getpid()
        raise RuntimeError("boom")
    assert holder(tmp_path) is None
    assert _try(tmp_path) == "got it"


def test_train_into_a_run_in_use_is_one_line(held, phantom_dirs):
    run, proc = held
    result = CliRunner().invoke(
        app,
        ["train", "--out", str(run), "--class-data", str(phantom_dirs["cls"]), "--steps", "1"],
        catch_exceptions=False,
    )
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"error: {run} is in use by process {proc.pid}; wait for it to finish, "
        "or stop it, before starting another training in this folder"
    ]
    assert not (run / "config.json").exists()  # nothing of the other run was touched


def test_resume_of_a_run_in_use_is_one_line(held, tmp_path, phantom_dirs):
    from multimix.config import TrainConfig

    run, proc = held
    cfg = TrainConfig(out=str(run), class_data=[str(phantom_dirs["cls"])], steps=1)
    cfg.save(run)
    result = CliRunner().invoke(app, ["train", "--resume", str(run)], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert f"is in use by process {proc.pid}" in result.output
    assert "Traceback" not in result.output


def test_torchrun_ranks_other_than_zero_do_not_lock(held):
    run, _ = held
    with run_lock(run, enabled=False):
        pass
    assert holder(run) is not None  # the other process still holds it
