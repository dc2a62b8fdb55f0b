"""End to end on the real embedded scene: a few folds of the held-out-class protocol.

Bounds were measured on the 2-core CPU (see the README); a shuffled score must fail them.
"""

import json

import numpy as np
import pytest
from rich.console import Console

from oodseg.config import TrainConfig
from oodseg.crossval import DEFAULT_DETECTORS, CrossvalConfig, crossval
from oodseg.metrics import ood_metrics

FOLDS = ("Hay-windrowed", "Woods", "Soybean-mintill")
EPOCHS = 20
# Measured on the 2-core CPU with the default settings (score maps smoothed with sigma 4, the pu
# threshold rule), mean over FOLDS, seeds 0 and 1: AUROC msp 0.803 / 0.794, maxlogit 0.830 /
# 0.791, energy 0.850 / 0.782, entropy 0.812 / 0.810 (the paper's settings measured 0.708-0.736);
# closed-set accuracy 0.630 / 0.670. A shuffled score gives 0.496-0.506 (5 seeds). The ID
# accuracy at the pu threshold follows where the threshold falls (test TPR 0.37-0.84 across these
# folds and seeds): 0.538-0.608 with seed 0, 0.398-0.440 with seed 1, hence its lower bound.
# Measured before the class smoothing (sigma 2), which raised the mean closed-set accuracy over
# the 16 scene folds from 0.725 to 0.766 (docs/lever_screen.md).
pytestmark = pytest.mark.slow  # three folds of 20 epochs: CI runs them (make test SLOW=1)

AUROC_BOUND = 0.74
CLOSED_SET_BOUND = 0.55
ID_ACCURACY_BOUND = 0.3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    # No baselines: nothing here checks them (the fully supervised one is tested in test_engine
    # and test_crossval_data), and they doubled this module's training.
    config = CrossvalConfig(
        hold_out=FOLDS, train=TrainConfig(epochs=EPOCHS, device="cpu"), baselines=False
    )
    out = tmp_path_factory.mktemp("run")
    return crossval(config, out, console=Console(quiet=True)), out


def test_outputs_have_every_fold_and_detector(run):
    res, out = run
    assert res == json.loads((out / "results.json").read_text())
    assert {"dataset", "protocols", "config", "versions", "seconds", "credit"} <= set(res)
    assert res["dataset"] == "indian_pines" and list(res["protocols"]) == ["loco"]
    assert "Baumgardner" in res["credit"]
    # No declared background: the paper's training (--unlabelled auto) and the default detectors.
    assert res["config"]["train"]["unlabelled"] == "ignore"
    assert tuple(res["config"]["detectors"]) == DEFAULT_DETECTORS
    loco = res["protocols"]["loco"]
    assert len(loco["folds"]) == len(FOLDS) * len(DEFAULT_DETECTORS)
    assert {r["held_out"] for r in loco["folds"]} == set(FOLDS)
    for r in loco["folds"]:
        for key in (
            "auroc",
            "aupr_in",
            "aupr_out",
            "fpr95",
            "threshold",
            "id_accuracy",
            "ood_recall",
            "miou_k_plus_1",
        ):
            assert np.isfinite(r[key]), key
        # The default rule (pu) set the K+1 map; the paper's rule keeps the target TPR of the
        # calibration pixels, and both are reported.
        assert r["threshold_rule"] == "pu" and r["threshold"] == r["pu:threshold"]
        assert r["ood_recall"] == r["pu:ood_recall"] and 0 < r["id_share_estimate"] < 1
        assert r["tpr:test_tpr"] > 0.5 and np.isfinite(r["oracle:balanced_accuracy"])
        # Every ID test pixel is scored once: kept or rejected at the threshold.
        assert 0 < r["test_tpr"] <= 1 and r["n_id"] > 1000 and r["n_ood"] > 100
        assert r["auroc_error_bound"] == 0  # a scene is far below the exact-metrics limit
    csv_rows = (out / "results.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + (len(FOLDS) + 2) * len(DEFAULT_DETECTORS)
    md = (out / "results.md").read_text()
    assert "| msp |" in md and "AUROC per fold" in md
    for png in ("roc_loco.png", "histograms_loco.png"):
        assert (out / png).stat().st_size > 10_000
    assert len(list(out.glob("panel_*.png"))) == len(FOLDS)
    assert len(list((out / "folds").glob("*.json"))) == len(FOLDS)


def _figures(out, det):
    """(ID scores, OOD scores) per fold, from the fold files."""
    found = []
    for path in sorted((out / "folds").glob("*.npz")):
        with np.load(path) as z:
            found.append((z[f"{det}|id_scores"], z[f"{det}|ood_scores"]))
    return found


def test_separation_beats_the_measured_bound_and_a_shuffled_score_does_not(run):
    res, out = run
    summary = res["protocols"]["loco"]["summary"]
    for det in ("msp", "maxlogit", "energy", "entropy"):
        assert summary[det]["auroc"]["mean"] > AUROC_BOUND, det
        assert summary[det]["id_accuracy"]["mean"] > ID_ACCURACY_BOUND, det
    closed = [r["closed_set_accuracy"] for r in res["protocols"]["loco"]["folds"]]
    assert np.mean(closed) > CLOSED_SET_BOUND
    rng = np.random.default_rng(0)
    shuffled, exact = [], []
    for id_s, ood_s in _figures(out, "msp"):
        scores = rng.permutation(np.r_[id_s, ood_s])
        shuffled.append(ood_metrics(scores[: len(id_s)], scores[len(id_s) :])["auroc"])
        exact.append(ood_metrics(id_s, ood_s)["auroc"])
    assert np.mean(shuffled) < AUROC_BOUND
    # The figures keep every score of a scene: their AUROC is the reported one.
    rows = [r["auroc"] for r in res["protocols"]["loco"]["folds"] if r["detector"] == "msp"]
    np.testing.assert_allclose(sorted(exact), sorted(rows), atol=1e-6)


def test_block_split_skips_and_reports_classes_missing_from_a_side(tmp_path):
    config = CrossvalConfig(
        split="blocks", hold_out=("Oats", "Corn"), train=TrainConfig(epochs=2, device="cpu")
    )
    res = crossval(config, tmp_path, console=Console(quiet=True))["protocols"]["loco"]
    # Oats has no pixel in the test blocks: its fold is skipped and the report says why.
    assert [s["held_out"] for s in res["skipped_folds"]] == ["Oats"]
    assert "no test pixel of Oats" in res["skipped_folds"][0]["reason"]
    assert {r["held_out"] for r in res["folds"]} == {"Corn"}
    # Classes with test pixels but no annotation in the training blocks are left out of the fold.
    assert res["left_out_classes"] == {
        "Corn": ["Alfalfa", "Grass-pasture-mowed", "Stone-Steel-Towers"]
    }
