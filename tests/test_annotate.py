import numpy as np
import pytest
from scipy import ndimage

from oodseg.annotate import class_budget, simulate_annotations


@pytest.mark.parametrize("mode", ["strokes", "points"])
@pytest.mark.parametrize("budget", [0.01, 0.05, 0.10])
def test_never_annotates_label_0_and_respects_the_budget(indian_pines, mode, budget):
    labels = indian_pines.labels
    ann = simulate_annotations(labels, mode=mode, budget=budget, seed=3)
    assert not ann.mask[labels == 0].any()
    # Every annotation carries the true class of its pixel.
    np.testing.assert_array_equal(ann.labels[ann.mask], labels[ann.mask])
    for c in range(1, 17):
        n = int((labels == c).sum())
        got = int((ann.labels == c).sum())
        assert 1 <= got <= class_budget(n, budget, 6)
        assert got <= max(6, np.ceil(budget * n))


def test_budget_is_nearly_used_on_large_classes(indian_pines):
    ann = simulate_annotations(indian_pines.labels, budget=0.05, seed=0)
    n = int((indian_pines.labels == 11).sum())
    assert int((ann.labels == 11).sum()) == class_budget(n, 0.05, 6)


def test_strokes_are_connected_and_few(indian_pines):
    ann = simulate_annotations(indian_pines.labels, budget=0.05, stroke_length=12, seed=1)
    ids = np.unique(ann.stroke[ann.mask])
    sizes = np.array([(ann.stroke == s).sum() for s in ids])
    assert sizes.max() <= 12
    assert sizes.mean() > 3  # scribbles, not isolated clicks
    for s in ids[:50]:
        _, n_parts = ndimage.label(ann.stroke == s, structure=np.ones((3, 3)))
        assert n_parts == 1


def test_region_and_seed(indian_pines):
    region = np.zeros(indian_pines.labels.shape, bool)
    region[:, :70] = True
    a = simulate_annotations(indian_pines.labels, region=region, seed=5)
    b = simulate_annotations(indian_pines.labels, region=region, seed=5)
    c = simulate_annotations(indian_pines.labels, region=region, seed=6)
    assert not a.mask[~region].any()
    np.testing.assert_array_equal(a.labels, b.labels)
    assert (a.labels != c.labels).any()


def test_bad_budget_and_mode():
    labels = np.ones((8, 8), int)
    with pytest.raises(ValueError, match="budget"):
        simulate_annotations(labels, budget=0)
    with pytest.raises(ValueError, match="annotation mode"):
        simulate_annotations(labels, mode="blobs")
