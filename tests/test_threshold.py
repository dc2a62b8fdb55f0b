import numpy as np
import pytest

from oodseg.threshold import (
    calibrate_threshold,
    mixture_proportion,
    open_set_labels,
    operating_points,
    share_threshold,
)


@pytest.mark.parametrize("tpr", [0.5, 0.9, 0.95, 0.99])
@pytest.mark.parametrize("kind", ["continuous", "ties"])
def test_threshold_keeps_the_requested_tpr_and_no_more_than_needed(tpr, kind):
    rng = np.random.default_rng(4)
    scores = (
        rng.normal(size=1001) if kind == "continuous" else rng.integers(0, 30, 1001).astype(float)
    )
    thr = calibrate_threshold(scores, tpr)
    assert (scores >= thr).mean() >= tpr
    # Any higher threshold keeps fewer than requested: this is the largest valid one.
    higher = scores[scores > thr]
    if higher.size:
        assert (scores >= higher.min()).mean() < tpr


def test_threshold_on_a_small_exact_case():
    scores = np.arange(1, 21, dtype=float)  # 20 scores
    assert calibrate_threshold(scores, 0.95) == 2.0  # keeps 19 / 20
    assert calibrate_threshold(scores, 0.9) == 3.0  # keeps 18 / 20


@pytest.mark.parametrize("tpr", [0.0, 1.0, -0.1, 1.5])
def test_target_tpr_outside_0_1_is_refused(tpr):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        calibrate_threshold(np.ones(5), tpr)


def test_open_set_labels():
    logits = np.array([[[3.0, 0.0]], [[1.0, 2.0]]])  # (K=2, 1, 2)
    scores = np.array([[0.9, 0.1]])
    np.testing.assert_array_equal(open_set_labels(logits, scores, 0.5), [[0, 2]])
    np.testing.assert_array_equal(open_set_labels(logits, scores, 0.05), [[0, 1]])


@pytest.mark.parametrize("share", [0.2, 0.45, 0.7, 0.9])
@pytest.mark.parametrize("separation", [2.0, 3.0])
def test_best_bin_estimate_recovers_a_known_share(share, separation):
    """Positives N(s, 1); unlabelled: that share of positives, the rest N(0, 1). BBE's estimate
    sits within 0.05 of the truth (measured: at most 0.032 off over these eight cases)."""
    rng = np.random.default_rng(int(share * 100 + separation))
    positive = rng.normal(separation, 1, 5000)
    is_pos = rng.random(50_000) < share
    unlabelled = np.where(is_pos, rng.normal(separation, 1, 50_000), rng.normal(0, 1, 50_000))
    assert mixture_proportion(positive, unlabelled) == pytest.approx(share, abs=0.05)


def test_best_bin_estimate_is_the_ratio_of_the_tail_shares_at_its_cut_off():
    """Against the formula on a case small enough to enumerate every cut-off by hand."""
    positive = np.array([0.2, 0.6, 0.9, 1.0])
    unlabelled = np.array([0.0, 0.1, 0.5, 0.6, 0.95, 1.0])
    slack = np.sqrt(np.log(40) / 12) + np.sqrt(np.log(40) / 8)
    cuts = np.unique(positive)
    q_p = np.array([(positive >= c).mean() for c in cuts])
    q_u = np.array([(unlabelled >= c).mean() for c in cuts])
    best = np.argmin((q_u + 1.01 * slack) / q_p)
    assert mixture_proportion(positive, unlabelled) == pytest.approx(
        min(1.0, q_u[best] / q_p[best]), abs=1e-15
    )
    with pytest.raises(ValueError, match="positive and unlabelled"):
        mixture_proportion(positive, np.array([]))


def test_share_threshold_flags_the_estimated_ood_share():
    scores = np.arange(100, dtype=np.float32)
    t = share_threshold(scores, 0.7)
    assert (scores < t).sum() == 30
    assert (scores < share_threshold(scores, 0.0)).all()
    assert not (scores < share_threshold(scores, 1.0)).any()


def test_operating_points_hold_every_rule_among_the_candidates():
    rng = np.random.default_rng(3)
    cal = rng.normal(2, 1, 500).astype(np.float32)
    unl = rng.normal(0, 2, 5000).astype(np.float32)
    points = operating_points(cal, unl, 0.95)
    assert set(points.thresholds) == {"tpr", "pu"}
    assert points.thresholds["tpr"] == calibrate_threshold(cal, 0.95)
    assert 0 < points.id_share < 1
    for t in points.thresholds.values():
        assert np.float32(t) in points.candidates
    assert set(operating_points(cal, None, 0.95).thresholds) == {"tpr"}
