import numpy as np
import pytest

from oodseg.threshold import calibrate_threshold, open_set_labels


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
