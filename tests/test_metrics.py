"""Our exact metrics against scikit-learn, including huge offsets and heavy ties."""

import numpy as np
import pytest
from sklearn.metrics import (
    auc,
    average_precision_score,
    f1_score,
    jaccard_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from oodseg.metrics import ood_metrics, segmentation_metrics


def sklearn_metrics(id_s: np.ndarray, ood_s: np.ndarray) -> dict[str, float]:
    y = np.r_[np.ones(len(id_s)), np.zeros(len(ood_s))]
    s = np.r_[id_s, ood_s]
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    p_in, r_in, _ = precision_recall_curve(y, s)
    p_out, r_out, _ = precision_recall_curve(1 - y, -s)
    return {
        "auroc": roc_auc_score(y, s),
        "aupr_in": auc(r_in, p_in),
        "aupr_out": auc(r_out, p_out),
        "ap": average_precision_score(y, s),
        "fpr95": fpr[np.searchsorted(tpr, 0.95)],
    }


def cases():
    rng = np.random.default_rng(1)
    yield "continuous", rng.normal(1, 1, 3000), rng.normal(0, 1, 700)
    yield "offset 1e4", 1e4 + rng.normal(0.5, 1e-3, 2000), 1e4 + rng.normal(0, 1e-3, 2000)
    yield "energy scale", rng.normal(2e4, 50, 1000), rng.normal(1.99e4, 50, 300)
    yield (
        "heavy ties",
        rng.integers(0, 4, 5000).astype(float),
        rng.integers(0, 3, 1500).astype(float),
    )
    yield "all tied", np.zeros(100), np.zeros(50)
    yield "perfect", rng.uniform(1, 2, 200), rng.uniform(-2, -1, 100)
    yield "inverted", rng.uniform(-2, -1, 200), rng.uniform(1, 2, 100)
    yield (
        "binary msp",
        rng.choice([0.5, 1.0], 1000, p=[0.2, 0.8]),
        rng.choice([0.5, 1.0], 400, p=[0.7, 0.3]),
    )


@pytest.mark.parametrize("name,id_s,ood_s", list(cases()), ids=[c[0] for c in cases()])
def test_ood_metrics_equal_scikit_learn(name, id_s, ood_s):
    ours = ood_metrics(id_s, ood_s)
    ref = sklearn_metrics(id_s, ood_s)
    for k, v in ref.items():
        assert ours[k] == pytest.approx(v, abs=1e-12), k


def test_auroc_is_the_mann_whitney_probability():
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 20, 300).astype(float), rng.integers(0, 15, 200).astype(float)
    diff = a[:, None] - b[None, :]
    expected = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
    assert ood_metrics(a, b)["auroc"] == pytest.approx(expected, abs=1e-14)


def test_ood_metrics_reject_empty_and_nan():
    with pytest.raises(ValueError, match="both ID and OOD"):
        ood_metrics(np.ones(3), np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        ood_metrics(np.array([1.0, np.nan]), np.ones(2))


def test_segmentation_metrics_equal_scikit_learn():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 5, 4000)
    pred = np.where(rng.random(4000) < 0.6, truth, rng.integers(0, 6, 4000))
    ours = segmentation_metrics(truth, pred, 6)
    labels = np.arange(6)
    np.testing.assert_allclose(
        ours["iou"][:5], jaccard_score(truth, pred, labels=labels, average=None)[:5], atol=1e-12
    )
    np.testing.assert_allclose(
        ours["dice"][:5], f1_score(truth, pred, labels=labels, average=None)[:5], atol=1e-12
    )
    # Class 5 is never true but predicted: IoU 0, counted in the mean.
    assert ours["iou"][5] == 0
    assert ours["miou"] == pytest.approx(jaccard_score(truth, pred, labels=labels, average="macro"))
    assert ours["accuracy"] == pytest.approx((truth == pred).mean())


def test_class_absent_from_both_maps_is_not_averaged():
    ours = segmentation_metrics(np.array([0, 0, 1]), np.array([0, 1, 1]), 3)
    assert np.isnan(ours["iou"][2])
    assert ours["miou"] == pytest.approx((0.5 + 0.5) / 2)
