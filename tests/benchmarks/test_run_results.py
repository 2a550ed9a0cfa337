import json
from pathlib import Path


def test_write_results_keeps_settings_results_and_the_table(tmp_path, benchmark_module):
    rr = benchmark_module("run_results")
    out = tmp_path / "deep" / "flip.json"
    rr.write_results(out, [Path("r1")], [Path("d1")], {"r1": {"dice": 0.9}}, table="| a |\n")
    written = json.loads(out.read_text())
    assert written["settings"]["runs"] == ["r1"] and written["settings"]["data"] == ["d1"]
    assert written["settings"]["cpu"]  # the CPU the figures were measured on
    assert written["results"] == {"r1": {"dice": 0.9}}
    assert out.with_suffix(".md").read_text() == "| a |\n"


def test_run_parser_requires_runs_and_data_when_asked(benchmark_module):
    rr = benchmark_module("run_results")
    args = rr.run_parser("doc\nmore", data_required=True).parse_args(
        ["--runs", "a", "b", "--data", "d", "--out", "o.json"]
    )
    assert args.runs == [Path("a"), Path("b")] and args.data == [Path("d")]
    assert rr.run_parser("doc").parse_args(["--runs", "a", "--out", "o"]).data == []


def test_score_folders_scores_every_run_and_folder_and_writes_both_files(
    tmp_path, benchmark_module, monkeypatch
):
    import sys

    import multimix.api as mm

    rr = benchmark_module("run_results")
    monkeypatch.setattr(mm, "load", lambda run: f"model of {run.name}")
    out = tmp_path / "f.json"
    argv = ["x", "--runs", "r1", "r2", "--data", "d1", "d2", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    rr.score_folders(
        "doc",
        lambda model, run, folder: {"who": f"{model}/{run.name}/{folder.name}"},
        lambda results: f"{len(results)} runs\n",
    )
    results = json.loads(out.read_text())["results"]
    assert results["r2"]["d1"] == {"who": "model of r2/r2/d1"}
    assert sorted(results) == ["r1", "r2"] and sorted(results["r1"]) == ["d1", "d2"]
    assert out.with_suffix(".md").read_text() == "2 runs\n"
