import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from oodseg.datasets import BandNormaliser
from oodseg.inference import Inference, Predictor
from oodseg.model import build_network, load_matching_weights
from oodseg.training import IGNORE, PatchDataset, TrainConfig, fit


def predictor(net, bands: int, precision: str = "32") -> Predictor:
    """Outputs of an input already normalised (identity normalisation)."""
    identity = BandNormaliser(np.zeros(bands), np.ones(bands))
    return Predictor(net, identity, "small", Inference(precision=precision))


def test_small_network_returns_logits_and_features_at_full_resolution():
    net = build_network("small", in_channels=7, num_classes=4).eval()
    logits, features = net(torch.randn(2, 7, 37, 50))
    assert logits.shape == (2, 4, 37, 50)
    assert features.shape == (2, net.feature_channels, 37, 50)
    # The head is linear (1 x 1): logits are an affine map of the features at each pixel.
    w, b = net.head.weight[:, :, 0, 0], net.head.bias
    manual = torch.einsum("kf,bfhw->bkhw", w, features) + b[None, :, None, None]
    torch.testing.assert_close(logits, manual, rtol=1e-4, atol=1e-4)


def test_hypercolumn_features_concatenate_every_decoder_stage_under_a_linear_head():
    net = build_network("small", in_channels=5, num_classes=3, features="hypercolumn").eval()
    logits, features = net(torch.randn(1, 5, 40, 48))
    assert features.shape == (1, 64 + 32 + 16 + 16, 40, 48) == (1, net.feature_channels, 40, 48)
    manual = torch.einsum("kf,bfhw->bkhw", net.head.weight[:, :, 0, 0], features)
    torch.testing.assert_close(
        logits, manual + net.head.bias[None, :, None, None], rtol=1e-4, atol=1e-4
    )
    with pytest.raises(ValueError, match="unknown feature choice 'bottleneck'"):
        build_network("small", 5, 3, features="bottleneck")


def test_reference_network_loads_only_matching_local_weights(tmp_path):
    net = build_network("reference", in_channels=5, num_classes=3)
    encoder = net.backbone.encoder
    state = {
        k: torch.full_like(v, 0.25)
        for k, v in encoder.state_dict().items()
        if v.dtype.is_floating_point
    }
    stem = next(k for k, v in state.items() if v.ndim == 4)
    state[stem] = torch.zeros(48, 3, 3, 3)  # an ImageNet stem: 3 bands, does not match 5
    save_file(state, tmp_path / "b4.safetensors")
    loaded = load_matching_weights(encoder, tmp_path / "b4.safetensors")
    assert loaded == len(state) - 1
    assert all(torch.all(encoder.state_dict()[k] == 0.25) for k in list(state)[1:3])
    logits, features = net.eval()(torch.randn(1, 5, 64, 64))
    assert logits.shape == (1, 3, 64, 64) and features.shape[1] == net.feature_channels
    with pytest.raises(FileNotFoundError, match="not found"):
        load_matching_weights(encoder, tmp_path / "missing.safetensors")


def test_patches_always_contain_annotations_and_keep_image_and_target_aligned():
    # Two images of different sizes, the second smaller than a patch (edge-padded).
    images = [
        torch.arange(3 * 40 * 30, dtype=torch.float32).reshape(3, 40, 30),
        -torch.arange(1, 3 * 12 * 20 + 1, dtype=torch.float32).reshape(3, 12, 20),
    ]
    target = [torch.full((40, 30), IGNORE), torch.full((12, 20), IGNORE)]
    target[1][5, 7] = 2  # one annotated pixel, in the second image
    ds = PatchDataset(list(zip(images, target, strict=True)), patch=16, length=20, seed=0)
    for i in range(20):
        img, tgt = ds[i]
        assert img.shape == (3, 16, 16) and tgt.shape == (16, 16)
        ((y, x),) = torch.nonzero(tgt == 2).tolist()
        # The annotated pixel's value travels with it through flips and rotations.
        assert img[0, y, x] == images[1][0, 5, 7]
        assert (img < 0).all()  # padding repeats the image's edge, never the other image


def test_patches_are_drawn_from_a_bounded_cache_of_images():
    """Images read on demand: the cache holds what fits in its budget, and the patches are those
    of a dataset that holds every image."""
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(6):
        target = torch.full((32, 32), IGNORE)
        target[rng.integers(0, 32, 5), rng.integers(0, 32, 5)] = 1
        pairs.append((torch.from_numpy(rng.normal(size=(2, 32, 32)).astype(np.float32)), target))
    reads = []

    class Disk(list):
        def __getitem__(self, n):
            reads.append(n)
            return super().__getitem__(n)

    one_image = 2 * 32 * 32 * 4 + 32 * 32 * 8 + 5 * 8
    counts = [int((t != IGNORE).sum()) for _, t in pairs]
    small = PatchDataset(Disk(pairs), 16, 40, 0, counts=counts, cache_bytes=2 * one_image)
    whole = PatchDataset(pairs, 16, 40, 0)
    for i in range(40):
        for a, b in zip(small[i], whole[i], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert len(small._cache) <= 2
    assert len(reads) > 6  # images were read again after being dropped


def test_patch_dataset_refuses_no_annotation():
    with pytest.raises(ValueError, match="no annotated pixel"):
        PatchDataset([(torch.zeros(2, 8, 8), torch.full((8, 8), IGNORE))], 8, 4, 0)


def test_training_is_seeded_and_learns(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(32, 32, 4)).astype(np.float32)
    image[:, 16:, 0] += 3  # class 1 is brighter in band 0
    target = np.full((32, 32), IGNORE)
    target[::4, 2:14:3] = 0
    target[::4, 18:30:3] = 1
    config = TrainConfig(
        epochs=6, patches_per_epoch=16, batch_size=4, patch=32, seed=3, device="cpu"
    )
    nets = []
    for run in range(2):
        torch.manual_seed(3)
        net = build_network("small", 4, 2)
        fit(
            net,
            [(image, target)],
            config,
            patch=32,
            checkpoint_dir=tmp_path / str(run),
            progress=False,
        )
        nets.append(net)
        assert (tmp_path / str(run) / "last.ckpt").is_file()
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    pred = predictor(nets[0], 4).forward(image).logits.argmax(0).numpy()
    assert (pred[:, :16] == 0).mean() > 0.8 and (pred[:, 16:] == 1).mean() > 0.8


def test_logitnorm_loss_matches_its_formula_and_ignores_unlabelled_pixels():
    from scipy.special import log_softmax

    from oodseg.training import segmentation_loss

    rng = np.random.default_rng(1)
    z = rng.normal(0, 5, (2, 4, 3, 3))
    y = rng.integers(0, 4, (2, 3, 3))
    y[0, 0, :] = IGNORE
    t = 0.1
    zn = z / (t * (np.linalg.norm(z, axis=1, keepdims=True) + 1e-7))
    logp = log_softmax(zn, axis=1)
    keep = y != IGNORE
    expected = -np.take_along_axis(logp, np.where(keep, y, 0)[:, None], 1)[:, 0][keep].mean()
    got = segmentation_loss(torch.from_numpy(z), torch.from_numpy(y), "logitnorm", t)
    assert got.item() == pytest.approx(expected, rel=1e-9)
    ce = segmentation_loss(torch.from_numpy(z), torch.from_numpy(y))
    expected_ce = -np.take_along_axis(log_softmax(z, axis=1), np.where(keep, y, 0)[:, None], 1)[
        :, 0
    ][keep].mean()
    assert ce.item() == pytest.approx(expected_ce, rel=1e-9)
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        TrainConfig(loss="focal")


def test_bf16_autocast_and_channels_last_train_and_infer_like_float32():
    """The GPU options run on any device: bf16 autocast and channels-last memory format give
    float32 outputs on the CPU that agree with a float32 run to bf16 precision."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(32, 32, 3)).astype(np.float32)
    target = np.full((32, 32), IGNORE)
    target[::4, ::4] = rng.integers(0, 2, (8, 8))
    config = TrainConfig(
        epochs=1,
        patches_per_epoch=4,
        batch_size=2,
        patch=32,
        device="cpu",
        precision="bf16-mixed",
        channels_last=True,
    )
    torch.manual_seed(0)
    net = fit(build_network("small", 3, 2), [(image, target)], config, patch=32, progress=False)
    fast = predictor(net, 3, "bf16-mixed").forward(image)
    assert fast.logits.dtype == torch.float32 and fast.features.shape == (16, 32, 32)
    reference = predictor(net, 3).forward(image).logits
    torch.testing.assert_close(fast.logits, reference, rtol=0.05, atol=0.05)
    with pytest.raises(ValueError, match="unknown precision '16'"):
        TrainConfig(precision="16")
