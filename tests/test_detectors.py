"""Each detector against its published formula, computed independently in float64 with scipy."""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax

from oodseg.detectors import DETECTORS, PixelOutputs, make_detector

RNG = np.random.default_rng(0)
LOGITS = np.concatenate([RNG.normal(0, 3, (500, 7)), RNG.normal(0, 30, (50, 7)) + 1e4])


def reference(name: str, z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    p = softmax(z, axis=1)
    return {
        "msp": p.max(axis=1),
        "maxlogit": z.max(axis=1),
        "energy": temperature * logsumexp(z / temperature, axis=1),
        "entropy": np.sum(p * np.log(np.clip(p, 1e-300, None)), axis=1),
    }[name]


def outputs(z: np.ndarray) -> PixelOutputs:
    logits = torch.from_numpy(z).float()
    return PixelOutputs(logits, torch.zeros(len(z), 4))


@pytest.mark.parametrize("name", ["msp", "maxlogit", "energy", "entropy"])
def test_logit_detectors_match_their_formula(name):
    got = (
        make_detector(name)
        .fit(outputs(LOGITS), torch.zeros(len(LOGITS), dtype=torch.long))
        .score(outputs(LOGITS))
    )
    assert got.dtype == torch.float64 and got.shape == (len(LOGITS),)
    # float32 logits (as the network gives them) scored in float64.
    z32 = LOGITS.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(got.numpy(), reference(name, z32), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("t", [0.5, 2.0, 1000.0])
def test_energy_temperature(t):
    got = make_detector("energy", temperature=t).score(outputs(LOGITS))
    np.testing.assert_allclose(
        got.numpy(), reference("energy", LOGITS.astype(np.float32).astype(np.float64), t), rtol=1e-9
    )


def test_higher_is_more_in_distribution():
    confident = np.array([[10.0, 0.0, 0.0]])
    unsure = np.array([[1.0, 1.0, 1.0]])
    for name in ["msp", "maxlogit", "energy", "entropy"]:
        d = make_detector(name)
        assert d.score(outputs(confident)).item() > d.score(outputs(unsure)).item(), name


def test_from_maps_flattens_pixels_in_raster_order():
    logits = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    features = -logits
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[1, 2] = True
    out = PixelOutputs.from_maps(logits, features, mask)
    assert out.logits.tolist() == [[logits[0, 1, 2].item(), logits[1, 1, 2].item()]]
    assert PixelOutputs.from_maps(logits, features).logits.shape == (12, 2)


def test_registry_errors_name_the_choices():
    assert {"msp", "maxlogit", "energy", "entropy"} <= set(DETECTORS)
    with pytest.raises(ValueError, match="unknown detector 'mcdropout'.*msp"):
        make_detector("mcdropout")
    with pytest.raises(ValueError, match="temperature must be positive"):
        make_detector("energy", temperature=0)


def test_params_come_from_the_constructor_signature():
    assert make_detector("gen", gamma=0.3).params() == {"gamma": 0.3, "top_m": 100}
    assert make_detector("knn", k=3).params() == {
        "k": 3,
        "bank_size": 20000,
        "seed": 0,
        "search": "auto",
        "chunk": 8192,
        "eps": 0.0,
        "centroids": 64,
    }
    assert make_detector("msp").params() == {}


@pytest.mark.parametrize("name", ["mahalanobis", "relative_mahalanobis", "knn", "vim"])
def test_scoring_before_fitting_is_a_clear_error(name):
    from oodseg.detectors import NotFittedError

    with pytest.raises(NotFittedError, match=f"the {name} detector is not fitted"):
        make_detector(name).score(outputs(LOGITS))
    # A detector with nothing to learn scores at once.
    assert make_detector("msp").score(outputs(LOGITS)).shape == (len(LOGITS),)
