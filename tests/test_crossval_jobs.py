"""Cross-validation as a cluster job array: each fold alone (--fold i), then `crossval merge`
gives the same tables as one run of all folds."""

import json

from typer.testing import CliRunner

from oodseg.cli import app

COMMON = [
    "--classes",
    "Woods,Hay-windrowed",
    "--detectors",
    "msp,mahalanobis",
    "--epochs",
    "3",
    "--device",
    "cpu",
]


def test_fold_jobs_merge_to_the_single_run(tmp_path):
    runner = CliRunner()
    for name, extra in (("all", []), ("f1", ["--fold", "1"]), ("f2", ["--fold", "2"])):
        result = runner.invoke(app, ["crossval", "--out", str(tmp_path / name), *COMMON, *extra])
        assert result.exit_code == 0, result.output
    one = json.loads((tmp_path / "f1" / "results.json").read_text())
    assert {r["held_out"] for r in one["folds"]} == {"Woods"}
    args = ["crossval", "merge", str(tmp_path / "f1"), str(tmp_path / "f2"), "--out"]
    result = runner.invoke(app, [*args, str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    whole = json.loads((tmp_path / "all" / "results.json").read_text())
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert merged["merged_from"] == 2
    assert merged["summary"] == whole["summary"]
    md = (tmp_path / "merged" / "results.md").read_text()
    assert "| Woods |" in md and "| Hay-windrowed |" in md
    for png in ("roc.png", "histograms.png"):
        assert (tmp_path / "merged" / png).stat().st_size > 10_000
    # A run of another configuration does not merge.
    result = runner.invoke(
        app, ["crossval", "--out", str(tmp_path / "other"), *COMMON, "--fold", "1", "--tpr", "0.9"]
    )
    assert result.exit_code == 0
    result = runner.invoke(
        app,
        [*args[:2], str(tmp_path / "f1"), str(tmp_path / "other"), "--out", str(tmp_path / "bad")],
    )
    assert result.exit_code == 2
    assert "differ in configuration (tpr)" in " ".join(result.output.split())
    assert not (tmp_path / "bad").exists()
