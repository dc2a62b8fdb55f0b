import numpy as np
import pytest
from scipy import ndimage

from oodseg.config import TrainConfig
from oodseg.crossval import CrossvalConfig, prepare
from oodseg.splits import make_split


def test_scene_split_is_disjoint_and_keeps_strokes_whole(indian_pines):
    labels = indian_pines.labels
    split = make_split(labels, "scene", budget=0.05, margin=1, seed=0)
    train, val, test = split.train.mask, split.val.mask, split.test
    assert not (train & val).any() and not (train & test).any() and not (val & test).any()
    assert not (test & (labels == 0)).any()
    # No stroke is shared between training and calibration.
    assert not set(np.unique(split.train.stroke[train])) & set(np.unique(split.val.stroke[val]))
    # The margin: no test pixel touches an annotated pixel.
    near = ndimage.binary_dilation(train | val, np.ones((3, 3), bool))
    assert not (near & test).any()
    # Every class keeps training annotations; the other labelled pixels are tested.
    assert set(np.unique(split.train.labels[train])) == set(range(1, 17))
    assert test.sum() > 0.7 * (labels > 0).sum()


def test_block_split_regions_are_disjoint(indian_pines):
    labels = indian_pines.labels
    split = make_split(labels, "blocks", budget=0.1, grid=5, seed=0)
    # 145 px in 5 blocks of 29: block row / column of every pixel.
    block = np.arange(145) // 29
    test_region = (block[:, None] + block[None, :]) % 2 == 1
    np.testing.assert_array_equal(split.test, (labels > 0) & test_region)
    assert not (split.train.mask & ~split.train_region).any()
    assert not (split.val.mask & (split.train_region | test_region)).any()
    assert not (split.train_region & test_region).any()
    assert split.train.mask.sum() > 0 and split.val.mask.sum() > 0


def test_block_layout_is_a_checkerboard():
    labels = np.ones((10, 10), int)
    split = make_split(labels, "blocks", budget=1.0, grid=5, seed=0)
    blocks = (
        split.train_region[::2, ::2].astype(int)
        + 2 * split.val.mask[::2, ::2]
        + 3 * split.test[::2, ::2]
    )
    expected = np.array(
        [
            [
                1 if (i + j) % 2 == 0 and i % 2 == 0 else 2 if (i + j) % 2 == 0 else 3
                for j in range(5)
            ]
            for i in range(5)
        ]
    )
    np.testing.assert_array_equal(blocks, expected)


def test_unknown_split():
    with pytest.raises(ValueError, match="unknown split"):
        make_split(np.ones((4, 4), int), "random")


def test_the_annotation_seed_fixes_the_strokes_while_the_seed_varies_the_network():
    def strokes(**options) -> tuple[np.ndarray, int]:
        seed = options.pop("seed")
        plan = prepare(CrossvalConfig(train=TrainConfig(seed=seed), **options), quiet=True)
        return plan.collection.load(0).train, plan.config.train.seed

    base, _ = strokes(seed=0)
    fixed, network_seed = strokes(seed=1, annotation_seed=0)
    drawn, _ = strokes(seed=1)
    np.testing.assert_array_equal(fixed, base)
    assert network_seed == 1 and (drawn != base).any()
