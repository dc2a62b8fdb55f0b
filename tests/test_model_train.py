import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from scipy import ndimage

from oodseg.config import TrainConfig
from oodseg.datasets import BandNormaliser
from oodseg.inference import Forward, Inference, Predictor, smooth_planes
from oodseg.model import Ensemble, build_network, load_matching_weights
from oodseg.training import IGNORE, PatchDataset, _batch, fit


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


@pytest.mark.parametrize("preset", ["small", "reference"])
def test_dropout_acts_in_training_only_and_keeps_the_weights(preset):
    torch.manual_seed(0)
    plain = build_network(preset, in_channels=5, num_classes=3)
    torch.manual_seed(0)
    dropped = build_network(preset, in_channels=5, num_classes=3, dropout=0.3)

    def rates(net):  # the EfficientNet encoder keeps its own head dropout (0.4)
        return [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout) and m.p != 0.4]

    assert len(rates(dropped)) >= 4 and set(rates(dropped)) == {0.3}
    assert not any(rates(plain))
    # The same parameters (a bundle needs no rate to load), the same outputs once evaluating.
    assert plain.state_dict().keys() == dropped.state_dict().keys()
    x = torch.randn(1, 5, 32, 32)
    torch.testing.assert_close(plain.eval()(x)[0], dropped.eval()(x)[0])
    dropped.train()
    x = torch.randn(2, 5, 64, 64)  # batch norm needs more than one value per channel
    assert not torch.allclose(dropped(x)[0], dropped(x)[0])


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


def test_ensemble_scores_the_members_mean_logits_under_one_linear_head():
    members = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        members.append(build_network("small", 6, 3, known_head=True).eval())
    net = Ensemble(members).eval()
    x = torch.randn(1, 6, 32, 40)
    with torch.no_grad():
        outs = [m(x) for m in members]
        logits, features = net(x)
        known = net.known_head(features)
    torch.testing.assert_close(logits, torch.stack([o[0] for o in outs]).mean(0))
    torch.testing.assert_close(features, torch.cat([o[1] for o in outs], 1))
    assert net.feature_channels == 3 * members[0].feature_channels == features.shape[1]
    torch.testing.assert_close(
        known, torch.stack([m.known_head(o[1]) for m, o in zip(members, outs, strict=True)]).mean(0)
    )
    # Still logits = W · features + b, the linear head feature detectors such as ViM need.
    manual = torch.einsum("kf,bfhw->bkhw", net.head.weight[:, :, 0, 0].double(), features.double())
    manual = manual + net.head.bias.double()[None, :, None, None]
    torch.testing.assert_close(logits.double(), manual, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="at least 2 networks"):
        Ensemble(members[:1])
    with pytest.raises(ValueError, match="ensemble must be at least 1"):
        TrainConfig(ensemble=0)


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


def test_a_patch_is_a_turned_or_flipped_image_window_and_batches_channels_last():
    rng = np.random.default_rng(1)
    hwc = rng.normal(size=(40, 36, 5)).astype(np.float32)  # distinct values: a window is found
    image = torch.from_numpy(hwc).permute(2, 0, 1)  # (C, H, W) over (H, W, C) memory, as trained
    target = torch.from_numpy(rng.integers(-1, 3, (40, 36)).astype(np.int16))
    ds = PatchDataset([(image, target)], patch=16, length=16, seed=0)
    samples = [ds[i] for i in range(16)]
    seen = set()
    for img, tgt in samples:
        assert img.dtype == torch.float32 and tgt.dtype == torch.int64
        matches = []
        for k in range(4):
            for flip in (False, True):
                # Undo the augmentation, then find the window by its first value (all distinct).
                im, tg = (img.flip(2), tgt.flip(1)) if flip else (img, tgt)
                im, tg = torch.rot90(im, -k, (1, 2)), torch.rot90(tg, -k, (0, 1))
                ((y0, x0),) = np.argwhere(hwc[:, :, 0] == im[0, 0, 0].item())
                window = image[:, y0 : y0 + 16, x0 : x0 + 16]
                if window.shape == im.shape and torch.equal(window, im):
                    assert torch.equal(target[y0 : y0 + 16, x0 : x0 + 16].long(), tg)
                    matches.append((k, flip))
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 4  # the eight turns and flips are all drawn
    images, targets = _batch(samples[:4])
    assert torch.equal(images, torch.stack([i for i, _ in samples[:4]]))
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(targets, torch.stack([t for _, t in samples[:4]]))


REUSE_PROBE = """
import resource, sys
import numpy as np
from oodseg.runtime import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
counts = []
for _ in range(3):  # 40 MiB blocks, every page touched, then freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(40 * 2**20 // 8)
    del block
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(counts[-1])
"""


def test_freed_blocks_are_reused_without_faulting_their_pages_in_again():
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the allocator setting is glibc's")

    def faults(mode: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", REUSE_PROBE, mode], capture_output=True, text=True, check=True
        )
        return int(run.stdout)

    assert faults("reuse") < 0.05 * faults("default")


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


def test_nnpu_risk_is_its_formula_with_the_defitting_step():
    from oodseg.training import PAD, nnpu_risk

    rng = np.random.default_rng(0)
    g = torch.from_numpy(rng.normal(size=(2, 6, 5)))
    target = torch.from_numpy(rng.choice([IGNORE, PAD, 0, 1, 2], size=(2, 6, 5)))
    prior = 0.3
    gp, gu = g.numpy()[target.numpy() >= 0], g.numpy()[target.numpy() == IGNORE]
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    negative = sig(gu).mean() - prior * sig(gp).mean()
    loss, risk = nnpu_risk(g, target, prior)
    assert float(risk) == pytest.approx(prior * sig(-gp).mean() + max(0.0, negative), abs=1e-12)
    expected = prior * sig(-gp).mean() + negative if negative >= 0 else -negative
    assert float(loss) == pytest.approx(expected, abs=1e-12)
    # Unlabelled pixels scored far more "known" than the positives: the negative part goes below
    # zero, and the loss to minimise is its negation (it pushes the unlabelled scores down).
    high = torch.where(target == IGNORE, torch.full_like(g, -8.0), torch.full_like(g, 8.0))
    loss, risk = nnpu_risk(high, target, 0.9)
    sig_p, sig_u = sig(8.0), sig(-8.0)
    assert float(risk) == pytest.approx(0.9 * sig(-8.0), abs=1e-12)
    assert float(loss) == pytest.approx(-(sig_u - 0.9 * sig_p), abs=1e-12)


def test_nnpu_learns_the_positive_vs_negative_boundary_from_positive_and_unlabelled_data():
    """1-D toy: positives N(2, 1), negatives N(-2, 1), unlabelled a 40 / 60 mixture. A linear
    classifier trained on the nnPU risk alone places its boundary near the Bayes boundary of
    that mixture, ln(0.6 / 0.4) / 4 = 0.10, and separates positives from negatives."""
    from oodseg.training import nnpu_risk

    gen = torch.Generator().manual_seed(0)
    pos = torch.randn(4000, generator=gen) + 2
    is_pos = torch.rand(20000, generator=gen) < 0.4
    unl = torch.where(
        is_pos, torch.randn(20000, generator=gen) + 2, torch.randn(20000, generator=gen) - 2
    )
    x = torch.cat([pos, unl])
    target = torch.cat([torch.zeros(4000, dtype=torch.long), torch.full((20000,), IGNORE)])
    a = torch.ones(1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([a, b], lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        loss, _ = nnpu_risk(a * x + b, target, 0.4)
        loss.backward()
        opt.step()
    boundary = float(-b.detach() / a.detach())
    assert boundary == pytest.approx(np.log(0.6 / 0.4) / 4, abs=0.25)
    truth = torch.cat([torch.ones(4000, dtype=torch.bool), is_pos])
    accuracy = float(((a * x + b > 0) == truth).float().mean())
    assert accuracy > 0.95


def test_known_head_scores_are_the_head_outputs_and_need_the_head():
    from oodseg.detectors import PixelOutputs, make_detector

    torch.manual_seed(0)
    net = build_network("small", 4, 3, known_head=True).eval()
    forward = predictor(net, 4).forward(np.random.default_rng(0).normal(size=(32, 48, 4)))
    with torch.no_grad():
        expected = net.known_head(forward.features[None])[0, 0]
    assert forward.known.shape == (32, 48)
    torch.testing.assert_close(forward.known, expected, rtol=1e-5, atol=1e-5)
    pu = make_detector("pu")
    scores = pu.score(forward.pixels(net.head))
    torch.testing.assert_close(scores.float(), expected.flatten(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="--unlabelled nnpu"):
        pu.score(PixelOutputs(forward.logits.flatten(1).T, forward.features.flatten(1).T))


def test_auto_unlabelled_takes_nnpu_on_rgb_images_with_declared_background():
    auto = TrainConfig()
    assert auto.unlabelled == "auto"
    assert auto.resolved(True, 3, 255).unlabelled == "nnpu" and auto.resolved(True, 3, 1).known_head
    for background, bands in ((False, 3), (True, 200), (False, 200)):
        assert auto.resolved(background, bands, 255).unlabelled == "ignore"
    for explicit in ("ignore", "nnpu"):
        config = TrainConfig(unlabelled=explicit, preset="small")
        assert config.resolved(True, 3, 255) == config == config.resolved(False, 200, 9000)
    with pytest.raises(ValueError, match="depends on the data"):
        _ = auto.known_head


def test_auto_preset_is_the_pretrained_encoder_on_8_bit_or_unit_rgb_only():
    auto = TrainConfig()
    assert auto.preset == "auto"
    assert auto.resolved(False, 3, 255).preset == auto.resolved(True, 3, 1.0).preset == "pretrained"
    for bands, top in ((3, 4095), (1, 255), (4, 255), (200, 1.0)):
        assert auto.resolved(False, bands, top).preset == "small"
    assert TrainConfig(preset="reference").resolved(False, 3, 255).preset == "reference"
    # A patch the small network takes but the pretrained encoder does not: refused once chosen.
    with pytest.raises(ValueError, match="--patch 48: the pretrained network .* multiples of 32"):
        TrainConfig(patch=48).resolved(False, 3, 255)
    assert TrainConfig(patch=48).resolved(False, 200, 255).patch == 48


def test_uniform_patches_reach_pixels_far_from_any_annotation():
    """With a PU head half the patches are placed uniformly: they cover the whole image, where
    anchored patches stay around the annotated corner."""
    image = torch.zeros(1, 96, 96)
    target = torch.full((96, 96), IGNORE)
    target[:4, :4] = 0
    anchored = PatchDataset([(image, target)], 16, 200, seed=0)
    mixed = PatchDataset([(image, target)], 16, 200, seed=0, uniform=0.5, areas=[96 * 96])
    seen = lambda ds: sum(int((ds[i][1] >= 0).any()) for i in range(len(ds)))  # noqa: E731
    assert seen(anchored) == 200
    assert 60 < seen(mixed) < 140


def test_class_smoothing_takes_the_neighbours_class_and_keeps_wide_regions():
    """Two fields (columns 0-19: class 0, 20-39: class 2) and one stray pixel leaning to class 1
    inside the first: smoothed with sigma 2, the stray pixel takes its field's class and every
    pixel three or more away from the border keeps its own; unsmoothed, it is the arg-max."""
    logits = torch.zeros(3, 40, 40)
    logits[0, :, :20] = 2.0
    logits[2, :, 20:] = 2.0
    logits[1, 10, 10] = 4.0
    forward = Forward(torch.zeros(1, 1, 40, 40), logits, torch.zeros(1, 40, 40))
    raw = forward.classes()
    np.testing.assert_array_equal(raw, logits.argmax(0).numpy())
    assert raw[10, 10] == 1
    smooth = forward.classes(2.0)
    assert smooth[10, 10] == 0
    truth = np.where(np.arange(40) < 20, 0, 2)[None].repeat(40, 0)
    far = np.abs(np.arange(40) - 19.5)[None].repeat(40, 0) >= 3
    np.testing.assert_array_equal(smooth[far], truth[far])


@pytest.mark.parametrize("components", [0, 3])
def test_input_is_the_normalised_image_edge_padded_and_channels_last_on_the_cpu(components):
    """Rows written in the image's own (H, W, C) layout give what normalising, transposing and
    replicate-padding the whole image gives (and its projection onto principal components)."""
    rng = np.random.default_rng(4)
    image = rng.integers(0, 4000, (37, 45, 6)).astype(np.uint16)
    normaliser = BandNormaliser(rng.normal(2000, 50, 6), rng.uniform(500, 900, 6))
    if components:
        normaliser = normaliser.with_pca(np.cov(rng.normal(size=(6, 50))), components)
    net = build_network("small", normaliser.channels, 2)
    x = Predictor(net, normaliser, "small").input(image)
    z = torch.from_numpy(normaliser(image.astype(np.float64)))
    want = F.pad(z.permute(2, 0, 1)[None], (0, 3, 0, 11), mode="replicate")  # to 48 x 48
    assert x.shape == (1, normaliser.channels, 48, 48)
    assert x.is_contiguous(memory_format=torch.channels_last)
    # float32 against float64: a few float32 steps of the largest value
    np.testing.assert_allclose(x.numpy(), want.numpy(), rtol=0, atol=1e-6 * want.abs().max())


def test_planes_smoothed_in_threads_equal_scipy_s_filter_over_the_stack():
    maps = np.random.default_rng(3).random((5, 37, 29), dtype=np.float32)
    want = ndimage.gaussian_filter(maps, (0, 2.0, 2.0), mode="nearest")
    np.testing.assert_array_equal(smooth_planes(maps, 2.0), want)
