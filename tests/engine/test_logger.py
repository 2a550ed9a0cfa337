from __future__ import annotations

from multimix.engine.logger import CsvLog


def test_csv_log_widens_its_header_and_truncates_on_resume(tmp_path):
    log = CsvLog(tmp_path / "log.csv")
    log.write({"step": 1, "loss": 0.5})
    log.write({"step": 2, "loss": 0.25, "loss_cls": 0.125})
    log.write({"step": 3, "loss": 0.1})
    rows = CsvLog(tmp_path / "log.csv").read()
    assert [r["loss_cls"] for r in rows] == ["", "0.125", ""]
    again = CsvLog(tmp_path / "log.csv")
    again.truncate_after(2)
    again.write({"step": 3, "loss": 0.2})
    assert [r["step"] for r in again.read()] == ["1", "2", "3"]
    assert again.read()[-1]["loss"] == "0.2"
