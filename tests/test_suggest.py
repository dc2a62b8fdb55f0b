"""Where to draw the next stroke: the acquisition score against its formula, regions ranked on a
constructed image whose answer is known, annotated pixels never suggested; the viewer's score
quantisation keeps the model's K+1 map exactly at its threshold."""

import numpy as np
import pytest

from oodseg.suggest import (
    LEVEL,
    WIDTH,
    acquisition,
    class_margin,
    regions_csv,
    suggest_regions,
)
from oodseg.viewer import Layer, ood_count, quantise

NAMES = ("soil", "corn", "woods")


def constructed():
    """A 60 x 80 image: confident everywhere (margin 0.9, scores far above the threshold 0)
    except a 10 x 20 block torn between two classes (margin 0.1, arg-max corn), a 6 x 6 block
    torn the same way, and a 12 x 12 block whose scores sit on the threshold (arg-max woods)."""
    h, w = 60, 80
    margin = np.full((h, w), 0.9, np.float32)
    scores = np.linspace(5, 6, h * w, dtype=np.float32).reshape(h, w)
    classes = np.ones((h, w), np.uint8)
    margin[5:15, 10:30] = 0.1
    classes[5:15, 10:30] = 2
    margin[40:46, 5:11] = 0.1
    scores[33:45, 50:62] = np.linspace(-0.01, 0.01, 144).reshape(12, 12)
    classes[33:45, 50:62] = 3
    return classes, margin, scores


def test_acquisition_matches_its_formula_in_float64():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=(30, 40)).transpose(2, 0, 1)
    scores = rng.normal(size=(30, 40))
    t = 0.3
    margin = class_margin(p)
    top = np.sort(p, axis=0)
    np.testing.assert_allclose(margin, top[-1] - top[-2], atol=1e-6)
    score, reason = acquisition(margin, scores, t)
    # Reference: the 5th and 95th percentiles by sorting, in float64.
    flat = np.sort(scores.ravel().astype(np.float64))
    spread = np.interp(0.95 * (flat.size - 1), np.arange(flat.size), flat) - np.interp(
        0.05 * (flat.size - 1), np.arange(flat.size), flat
    )
    near = np.clip(1 - np.abs(scores - t) / (WIDTH * spread), 0, 1)
    between = np.where(scores >= t, 1 - (top[-1] - top[-2]), 0)
    np.testing.assert_allclose(score, np.maximum(between, near), atol=1e-6)
    assert ((reason == 1) == (near > between)).all()
    assert class_margin(p[:1]).min() == 1.0  # one class: nothing to choose between


def test_regions_are_ranked_by_their_doubt_on_a_constructed_image():
    classes, margin, scores = constructed()
    regions = suggest_regions("img", classes, margin, scores, 0.0, NAMES)
    assert [r.bbox for r in regions[:3]] == [(5, 10, 15, 30), (33, 50, 45, 62), (40, 5, 46, 11)]
    first, second, third = regions[:3]
    assert first.reason == "class" and first.predicted == "corn" and first.area == 200
    assert first.score == pytest.approx(200 * 0.9)
    assert first.centroid == pytest.approx((9.5, 19.5))
    assert second.reason == "threshold" and second.predicted == "woods"
    assert second.ood_share == pytest.approx(0.5)
    assert third.predicted == "soil" and third.area == 36
    assert [r.rank for r in regions] == list(range(1, len(regions) + 1))
    for r in regions:  # the anchor lies inside its region, where the doubt is
        assert r.bbox[0] <= r.anchor[0] < r.bbox[2] and r.bbox[1] <= r.anchor[1] < r.bbox[3]
    assert suggest_regions("img", classes, margin, scores, 0.0, NAMES, top=1) == regions[:1]
    assert [r.bbox for r in suggest_regions("img", classes, margin, scores, 0.0, NAMES,
                                            min_area=40)][:2] == [r.bbox for r in regions[:2]]  # fmt: skip
    # A region stays inside one cell and one arg-max class: doubt over a wide area comes in
    # pieces a stroke can settle.
    cut = suggest_regions("img", classes, margin, scores, 0.0, NAMES, cell=8)
    assert {r.bbox for r in cut} >= {(5, 10, 8, 16), (8, 24, 15, 30)}
    assert all(r.bbox[2] - r.bbox[0] <= 8 and r.bbox[3] - r.bbox[1] <= 8 for r in cut)
    two = classes.copy()
    two[5:15, 20:30] = 3
    halves = suggest_regions("img", two, margin, scores, 0.0, NAMES)
    assert {(r.bbox, r.predicted) for r in halves} >= {
        ((5, 10, 15, 20), "corn"),
        ((5, 20, 15, 30), "woods"),
    }
    csv = regions_csv(regions).splitlines()
    assert csv[0].startswith("image,rank,score") and len(csv) == len(regions) + 1


def test_annotated_pixels_and_their_surroundings_are_never_suggested():
    classes, margin, scores = constructed()
    annotated = np.zeros(classes.shape, bool)
    annotated[8, 12:28] = True  # a stroke across the large torn block
    gap = 2
    regions = suggest_regions("img", classes, margin, scores, 0.0, NAMES, annotated=annotated)
    score, _ = acquisition(margin, scores, 0.0)
    from scipy import ndimage

    near = ndimage.binary_dilation(annotated, iterations=gap)
    labelled, _ = ndimage.label((score >= LEVEL) & ~near, structure=np.ones((3, 3)))
    for r in regions:
        y, x = r.anchor
        assert not near[y, x]
        region = labelled == labelled[y, x]
        assert not (region & near).any() and region.sum() == r.area
    # What is left of the large block is still suggested, less the stroke's surroundings (which
    # cut it in two, above and below the stroke).
    rest = [r for r in regions if r.bbox[0] >= 5 and r.bbox[2] <= 15 and r.bbox[1] >= 10]
    assert [r.bbox for r in rest] == [(9, 10, 15, 30), (5, 10, 8, 30)]
    assert sum(r.area for r in rest) == 200 - near[5:15, 10:30].sum()
    with pytest.raises(ValueError, match="differs from the image"):
        suggest_regions("img", classes, margin, scores, 0.0, NAMES, annotated=annotated[:5])
    with pytest.raises(ValueError, match="top and min_area"):
        suggest_regions("img", classes, margin, scores, 0.0, NAMES, top=0)


@pytest.mark.parametrize("threshold", [-1.3, 0.0, 0.77, 5.0])
def test_quantised_scores_give_the_models_k_plus_1_map_at_its_threshold(threshold):
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(50, 70)).astype(np.float32)
    q, level, step = quantise(scores, threshold)
    inside = scores.min() < threshold < scores.max()
    if inside:
        np.testing.assert_array_equal(q < level, scores < threshold)
    assert step == pytest.approx((scores.max() - scores.min()) / 255)
    layer = Layer("m", np.ones(scores.shape, np.uint8), scores, threshold)
    assert ood_count(layer) == int((q < level).sum())
    # Every other level moves the threshold by whole steps.
    for lv in (1, 64, 200, 255):
        edge = threshold + (lv - level) * step
        if scores.min() + step < edge < scores.max() - step:
            flagged = ood_count(layer, lv)
            assert (scores < edge - 1e-5).sum() <= flagged <= (scores < edge + 1e-5).sum()
