"""Cross-validation as a cluster job array: each fold alone (--fold i), then `crossval merge`
gives the same tables as one run of all folds."""

import json

import numpy as np
import pytest
from browser import headless_dom
from typer.testing import CliRunner

from oodseg.cli import app
from oodseg.viewer import Layer, ood_count

COMMON = [
    "--hold-out",
    "Woods,Hay-windrowed",
    "--detectors",
    "msp,mahalanobis",
    "--epochs",
    "3",
    "--device",
    "cpu",
    "--no-baselines",
]


@pytest.mark.slow
def test_fold_jobs_merge_to_the_single_run(tmp_path):
    runner = CliRunner()
    for name, extra in (("all", []), ("f1", ["--fold", "1"]), ("f2", ["--fold", "2"])):
        result = runner.invoke(app, ["crossval", "--out", str(tmp_path / name), *COMMON, *extra])
        assert result.exit_code == 0, result.output
    one = json.loads((tmp_path / "f1" / "results.json").read_text())
    assert {r["held_out"] for r in one["protocols"]["loco"]["folds"]} == {"Woods"}
    args = ["crossval", "merge", str(tmp_path / "f1"), str(tmp_path / "f2"), "--out"]
    result = runner.invoke(app, [*args, str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    whole = json.loads((tmp_path / "all" / "results.json").read_text())
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert merged["merged_from"] == 2
    assert merged["protocols"]["loco"]["summary"] == whole["protocols"]["loco"]["summary"]

    def timeless(rows):
        return [{k: v for k, v in r.items() if k != "detector_seconds"} for r in rows]

    assert timeless(merged["protocols"]["loco"]["folds"]) == timeless(
        whole["protocols"]["loco"]["folds"]
    )
    md = (tmp_path / "merged" / "results.md").read_text()
    assert "| Woods |" in md and "| Hay-windrowed |" in md
    assert len(list((tmp_path / "merged").glob("panel_*.png"))) == 2
    for png in ("roc_loco.png", "histograms_loco.png"):
        assert (tmp_path / "merged" / png).stat().st_size > 10_000
    # The report's viewer page of the scene shows both folds' maps, the slider redrawing each.
    result = runner.invoke(app, ["report", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    (page,) = (tmp_path / "merged" / "viewer").glob("*.html")
    layers = sorted((tmp_path / "merged" / "viewer" / page.stem).glob("0*.npz"))
    assert (
        len(layers) == 2
        and f'href="viewer/{page.name}"' in (tmp_path / "merged" / "report.html").read_text()
    )
    with np.load(layers[1]) as f:
        layer = Layer(
            "Hay-windrowed", f["classes"], f["scores"], json.loads(str(f["meta"]))["threshold"]
        )
    dom, _ = headless_dom(page.as_uri() + "#layer=1&level=90")
    assert f'data-ood="{ood_count(layer, 90)}"' in dom and "data-errors" not in dom
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
    assert "differ in configuration (scoring.tpr)" in " ".join(result.output.split())
    assert not (tmp_path / "bad").exists()


def test_an_interrupted_run_resumes_and_keeps_its_finished_folds(tmp_path, monkeypatch):
    import sys

    module = sys.modules["oodseg.crossval"]  # the package's `crossval` name is the function
    runner = CliRunner()
    out = tmp_path / "run"
    real, calls = module.run_fold, []

    def interrupted(collection, fold, *args, **kwargs):
        calls.append(fold.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second fold
        return real(collection, fold, *args, **kwargs)

    monkeypatch.setattr(module, "run_fold", interrupted)
    result = runner.invoke(app, ["crossval", "--out", str(out), *COMMON])
    assert result.exit_code != 0 and not out.exists()
    partial = tmp_path / ".run.partial"
    assert [p.name for p in sorted((partial / "folds").glob("*.json"))] == ["00-loco-Woods.json"]
    calls.clear()
    result = runner.invoke(app, ["crossval", "--out", str(out), *COMMON, "--resume"])
    assert result.exit_code == 0, result.output
    assert calls == ["Hay-windrowed"]  # the finished fold was kept, not rerun
    assert "done earlier, kept" in result.output
    res = json.loads((out / "results.json").read_text())
    assert {r["held_out"] for r in res["protocols"]["loco"]["folds"]} == {"Woods", "Hay-windrowed"}
    assert not partial.exists() and not (out / "checkpoints").exists()
    # Resuming a run of another configuration is refused.
    monkeypatch.undo()
    runner.invoke(app, ["crossval", "--out", str(tmp_path / "b"), *COMMON, "--fold", "1"])
    (tmp_path / ".c.partial").mkdir()
    (tmp_path / ".c.partial" / "run.json").write_text(
        (tmp_path / "b" / "run.json").read_text().replace('"tpr": 0.95', '"tpr": 0.9')
    )
    result = runner.invoke(app, ["crossval", "--out", str(tmp_path / "c"), *COMMON, "--resume"])
    assert result.exit_code == 2 and "another configuration" in " ".join(result.output.split())
