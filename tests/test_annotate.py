import numpy as np
import pytest
from scipy import ndimage

from oodseg.annotate import _strokes, class_budget, simulate_annotations, stroke_at


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


def _strokes_by_argwhere(inside, target, max_length, rng):
    """The stroke loop drawn the plain way: every start uniform over ``np.argwhere(free)``."""
    free, paths, marked = inside.copy(), [], 0
    while marked < target and free.any():
        starts = np.argwhere(free)
        start = tuple(int(v) for v in starts[rng.integers(len(starts))])
        angle = rng.uniform(0, 2 * np.pi)
        length = min(int(rng.integers(3, max_length + 1)), target - marked)
        path = stroke_at(free, start, length, rng, angle)
        if len(path):
            paths.append(path)
            marked += len(path)
    return paths


def test_strokes_start_where_drawing_over_every_free_pixel_would():
    """The per-row count that finds a stroke's start picks the same pixels, from the same random
    numbers, as drawing over ``np.argwhere`` of the free pixels."""
    rng = np.random.default_rng(0)
    for trial in range(20):
        h, w = rng.integers(2, 60, 2)
        blocks = rng.random((h // 6 + 1, w // 6 + 1)) < 0.6
        inside = np.kron(blocks, np.ones((6, 6), bool))[:h, :w] & (rng.random((h, w)) < 0.9)
        target = int(rng.integers(1, max(2, inside.sum())))
        ours = _strokes(inside, target, 12, np.random.default_rng(trial))
        plain = _strokes_by_argwhere(inside, target, 12, np.random.default_rng(trial))
        assert len(ours) == len(plain)
        for a, b in zip(ours, plain, strict=True):
            np.testing.assert_array_equal(a, b)
