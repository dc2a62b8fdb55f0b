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

from oodseg.metrics import ScoreHistogram, ood_metrics, per_image_ood_metrics, segmentation_metrics


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


def test_histogram_metrics_stay_within_their_bound_of_the_exact_values():
    rng = np.random.default_rng(7)
    id_s = rng.normal(1, 1, 400_000).astype(np.float32)
    ood_s = rng.normal(0, 1.5, 150_000).astype(np.float32)
    hist = ScoreHistogram()
    for part in range(4):  # streamed in batches
        hist.update(id_s[part::4], ood_s[part::4])
    got = hist.compute()
    exact = ood_metrics(id_s, ood_s)
    assert got["auroc_error_bound"] <= 1e-4
    assert abs(got["auroc"] - exact["auroc"]) <= got["auroc_error_bound"]
    for k in ("aupr_in", "aupr_out", "ap", "fpr95"):
        assert got[k] == pytest.approx(exact[k], abs=1e-3), k


def test_histogram_is_exact_on_tied_scores_and_huge_offsets():
    rng = np.random.default_rng(8)
    id_s = 1e4 + rng.integers(0, 50, 20000).astype(np.float32)
    ood_s = 1e4 + rng.integers(0, 40, 9000).astype(np.float32)
    got = ScoreHistogram().update(id_s, ood_s).compute()
    exact = ood_metrics(id_s, ood_s)
    # Every distinct value has a bin of its own: the metrics are the exact ones.
    for k in exact:
        assert got[k] == pytest.approx(exact[k], abs=1e-12), k
    neg = ScoreHistogram().update(-id_s, -ood_s).compute()
    assert neg["auroc"] == pytest.approx(1 - exact["auroc"], abs=1e-12)


def test_histogram_refuses_nan():
    with pytest.raises(ValueError, match="NaN"):
        ScoreHistogram().update(np.array([np.nan]), np.array([1.0]))


def test_per_image_average():
    rng = np.random.default_rng(9)
    images = [(rng.normal(1, 1, 300), rng.normal(0, 1, 100)) for _ in range(3)]
    images.append((rng.normal(size=50), np.array([])))  # no OOD pixel: not averaged
    got = per_image_ood_metrics(images)
    assert got["n_images"] == 3
    assert got["auroc"] == pytest.approx(
        np.mean([ood_metrics(i, o)["auroc"] for i, o in images[:3]])
    )


@pytest.mark.parametrize("name,id_s,ood_s", list(cases()), ids=[c[0] for c in cases()])
def test_metrics_summed_over_small_chunks_equal_scikit_learn(name, id_s, ood_s, monkeypatch):
    import oodseg.metrics

    monkeypatch.setattr(oodseg.metrics, "CHUNK", 7)  # many chunks, boundaries everywhere
    ours = ood_metrics(id_s, ood_s)
    for k, v in sklearn_metrics(id_s, ood_s).items():
        assert ours[k] == pytest.approx(v, abs=1e-12), k


@pytest.mark.parametrize("name,id_s,ood_s", list(cases()), ids=[c[0] for c in cases()])
def test_tie_groups_over_small_blocks_equal_numpy_unique(name, id_s, ood_s, monkeypatch):
    import oodseg.metrics
    from oodseg.metrics import tie_groups

    monkeypatch.setattr(oodseg.metrics, "CHUNK", 5)  # blocks of scores cut everywhere
    values, where = np.unique(np.r_[id_s, ood_s], return_inverse=True)
    is_id = np.r_[np.ones(id_s.size, bool), np.zeros(ood_s.size, bool)]
    n_id = np.bincount(where[is_id], minlength=values.size)[::-1]
    n_ood = np.bincount(where[~is_id], minlength=values.size)[::-1]
    pos, neg = tie_groups(id_s, ood_s)
    np.testing.assert_array_equal(pos, n_id)
    np.testing.assert_array_equal(neg, n_ood)


def test_thinned_roc_follows_the_full_curve():
    from oodseg.metrics import CURVE_POINTS, separation, tie_groups

    rng = np.random.default_rng(4)
    id_s, ood_s = rng.normal(1, 1, 200_000), rng.normal(0, 1, 100_000)
    _, roc = separation(*tie_groups(id_s, ood_s))
    fpr, tpr, _ = roc_curve(np.r_[np.ones(len(id_s)), np.zeros(len(ood_s))], np.r_[id_s, ood_s])
    assert len(roc.fpr) <= 2 * CURVE_POINTS + 2 < len(fpr)
    assert (roc.fpr[0], roc.tpr[0], roc.fpr[-1], roc.tpr[-1]) == (0, 0, 1, 1)
    # Between kept points the full curve moves by less than a grid step.
    np.testing.assert_allclose(np.interp(fpr, roc.fpr, roc.tpr), tpr, atol=2 / CURVE_POINTS)


def test_threshold_sweep_equals_the_k_plus_1_map_at_every_candidate():
    from oodseg.metrics import ThresholdSweep

    rng = np.random.default_rng(5)
    k, n = 4, 5000
    truth = rng.integers(0, k + 1, n)  # index k: OOD
    argmax = np.where(rng.random(n) < 0.7, np.minimum(truth, k - 1), rng.integers(0, k, n))
    scores = (rng.normal(0, 1, n) + (truth < k)).astype(np.float32)
    candidates = np.quantile(scores, np.linspace(0, 1, 40)).astype(np.float32)
    sweep = ThresholdSweep(candidates, k)
    for part in np.array_split(np.arange(n), 3):  # streamed
        sweep.add(scores[part], truth[part], argmax[part])
    for t in sweep.candidates[::5]:
        pred = np.where(scores >= t, argmax, k)
        seg = segmentation_metrics(truth, pred, k + 1)
        got = sweep.at(float(t))
        is_id = truth < k
        assert got["test_tpr"] == pytest.approx((pred[is_id] < k).mean(), abs=1e-12)
        assert got["ood_recall"] == pytest.approx((pred[~is_id] == k).mean(), abs=1e-12)
        assert got["id_accuracy"] == pytest.approx((pred[is_id] == truth[is_id]).mean())
        assert got["miou_k_plus_1"] == pytest.approx(seg["miou"], abs=1e-12)
    best = sweep.best()
    assert best["balanced_accuracy"] == max(
        sweep.at(float(t))["balanced_accuracy"] for t in sweep.candidates
    )
    with pytest.raises(ValueError, match="candidates"):
        sweep.at(123.0)
