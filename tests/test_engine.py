"""The fold engine's bounded-memory paths against the exact ones, on the real scene: metrics from
the streaming histogram within their stated AUROC bound, and the same fold either way."""

import numpy as np
import pytest

import oodseg.metrics
from oodseg.config import ScoringConfig, TrainConfig
from oodseg.engine import Fold, collect, run_fold
from oodseg.sources import scene_collection


@pytest.fixture(scope="module")
def collection(indian_pines):
    return collect(scene_collection(indian_pines, "scene"))


def test_streamed_metrics_equal_the_exact_ones_within_their_bound(collection, monkeypatch):
    woods = collection.class_names.index("Woods") + 1
    known = tuple(sorted(set(collection.class_counts("train")) - {woods}))
    fold = Fold("loco", "Woods", known, (woods,))
    config = TrainConfig(epochs=2, device="cpu")
    detectors = ("gen", "mahalanobis", "energy")
    exact = run_fold(collection, fold, config, ScoringConfig(), detectors)
    monkeypatch.setattr(oodseg.metrics, "EXACT_LIMIT", 1000)  # the histogram after 1,000 pixels
    streamed = run_fold(collection, fold, config, ScoringConfig(), detectors)
    for a, b in zip(exact.rows, streamed.rows, strict=True):
        assert a["auroc_error_bound"] == 0 and 0 < b["auroc_error_bound"] < 1e-3
        assert abs(a["auroc"] - b["auroc"]) <= b["auroc_error_bound"] + 1e-12
        assert b["fpr95"] == pytest.approx(a["fpr95"], abs=0.01)
        # Everything at the threshold comes from counts, not from the kept scores: identical.
        for key in (
            "threshold",
            "id_accuracy",
            "ood_recall",
            "miou_k_plus_1",
            "test_tpr",
            "pu:test_tpr",
            "oracle:balanced_accuracy",
            "id_share_estimate",
        ):
            assert a[key] == b[key], key
    # The figures keep a bounded, seeded sample of the scores whichever path was taken.
    for det in detectors:
        for side in ("id_scores", "ood_scores"):
            np.testing.assert_array_equal(exact.figures[det][side], streamed.figures[det][side])


def test_a_scene_fold_trains_its_fully_supervised_baseline_on_the_dense_labels(collection):
    """Loco on a scene: the baseline learns every labelled pixel of the known classes (the
    training region's dense labels) and is scored like the method, with its detector and rule."""
    woods = collection.class_names.index("Woods") + 1
    known = tuple(sorted(set(collection.class_counts("train")) - {woods}))
    fold = Fold("loco", "Woods", known, (woods,))
    sample = collection.load(0)
    assert (sample.dense == np.where(sample.dense > 0, sample.calibration_truth, 0)).all()
    assert (sample.dense > 0).sum() == (sample.calibration_truth > 0).sum()  # the whole scene
    result = run_fold(
        collection,
        fold,
        TrainConfig(epochs=2, device="cpu"),
        ScoringConfig(),
        ("gen",),
        baseline=True,
    )
    full = result.fully_supervised
    assert full["method"] == "fully supervised (gen, pu threshold; dense masks)"
    assert 0 <= full["auroc"] <= 1 and 0 < full["test_tpr"] <= 1
    assert full["balanced_accuracy"] == pytest.approx((full["test_tpr"] + full["ood_recall"]) / 2)
    assert set(full["iou_k_plus_1"]) == {*(collection.class_names[c - 1] for c in known), "OOD"}
