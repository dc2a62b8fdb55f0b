"""Feature-based detectors, GEN and ODIN against independent float64 implementations of their
published formulas (numpy, scipy, scikit-learn's OAS)."""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from sklearn.covariance import OAS

from oodseg.detectors import PixelOutputs, make_detector

K, F = 4, 12


def data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, n)
    centres = rng.normal(0, 3, (K, F))
    feats = centres[labels] + rng.normal(0, 1, (n, F)) @ rng.normal(0, 0.5, (F, F))
    w, b = rng.normal(size=(K, F)), rng.normal(size=K)
    return feats, labels, w, b


def outputs(feats, w, b):
    logits = feats @ w.T + b
    return PixelOutputs(
        torch.from_numpy(logits),
        torch.from_numpy(feats),
        torch.from_numpy(w),
        torch.from_numpy(b),
    )


def fit_score(name, train, labels, test, **params):
    det = make_detector(name, **params).fit(train, torch.from_numpy(labels))
    return det, det.score(test).numpy()


def maha_reference(x, feats, labels):
    means = np.stack([feats[labels == c].mean(0) for c in range(K)])
    centred = feats - means[labels]
    prec = np.linalg.inv(OAS(assume_centered=True).fit(centred).covariance_)
    d = np.stack([np.einsum("pf,fg,pg->p", x - m, prec, x - m) for m in means], 1)
    return d


def unit(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@pytest.mark.parametrize("normalize", [False, True])
def test_mahalanobis_matches_formula(normalize):
    feats, labels, w, b = data()
    x, *_ = data(200, seed=1)
    _, got = fit_score(
        "mahalanobis", outputs(feats, w, b), labels, outputs(x, w, b), normalize=normalize
    )
    if normalize:
        feats, x = unit(feats), unit(x)
    np.testing.assert_allclose(got, -maha_reference(x, feats, labels).min(1), rtol=1e-8)


@pytest.mark.parametrize("normalize", [False, True])
def test_relative_mahalanobis_matches_formula(normalize):
    feats, labels, w, b = data()
    x, *_ = data(200, seed=1)
    _, got = fit_score(
        "relative_mahalanobis", outputs(feats, w, b), labels, outputs(x, w, b), normalize=normalize
    )
    if normalize:
        feats, x = unit(feats), unit(x)
    mu0 = feats.mean(0)
    prec0 = np.linalg.inv(OAS().fit(feats).covariance_)
    d0 = np.einsum("pf,fg,pg->p", x - mu0, prec0, x - mu0)
    expected = -(maha_reference(x, feats, labels) - d0[:, None]).min(1)
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-8)


def test_shrinkage_keeps_mahalanobis_finite_with_fewer_pixels_than_features():
    rng = np.random.default_rng(2)
    feats = rng.normal(
        size=(10, 64)
    )  # 10 pixels, 64 dimensions: the empirical covariance is singular
    labels = np.arange(10) % 2
    w, b = rng.normal(size=(2, 64)), np.zeros(2)
    for name in ("mahalanobis", "relative_mahalanobis"):
        _, got = fit_score(
            name, outputs(feats, w, b), labels, outputs(rng.normal(size=(50, 64)), w, b)
        )
        assert np.isfinite(got).all(), name


@pytest.mark.parametrize("search", ["kdtree", "brute", "auto"])
def test_knn_matches_brute_force_cosine_and_is_chunk_invariant(search):
    feats, labels, w, b = data()
    x, *_ = data(300, seed=1)
    _, got = fit_score(
        "knn",
        outputs(feats, w, b),
        labels,
        outputs(x, w, b),
        k=7,
        search=search,
        chunk=64,
        centroids=0,
    )
    sims = unit(x) @ unit(feats).T
    expected = np.sort(sims, axis=1)[:, -7] - 1
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("eps", [0.5, 2.0])
def test_approximate_knn_keeps_scipys_bound(eps):
    # scipy's guarantee: the k-th distance found is within (1 + eps) of the true one, and never
    # below it (it is the distance to a real bank pixel); the score is -d^2 / 2.
    feats, labels, w, b = data(2000)
    x, *_ = data(3000, seed=1)
    _, got = fit_score(
        "knn", outputs(feats, w, b), labels, outputs(x, w, b), k=5, eps=eps, centroids=0
    )
    exact = np.sort(unit(x) @ unit(feats).T, axis=1)[:, -5] - 1
    assert (got <= exact + 1e-6).all()  # float32 unit vectors, as in the exact test
    assert (got >= (1 + eps) ** 2 * exact - 1e-6).all()
    assert (got < exact - 1e-3).any()  # the search did take the shortcut


def test_knn_centroid_bank_is_each_class_s_cluster_means():
    # Two classes, each two tight clusters in well-separated directions: two centroids per class
    # are the four normalised cluster means, and with k = 1 a score is the cosine to the nearest
    # of them minus one.
    rng = np.random.default_rng(4)
    means = unit(rng.normal(size=(4, F))) * 5
    cluster = np.repeat(np.arange(4), 150)
    feats = means[cluster] + rng.normal(0, 0.01, (600, F))
    labels = cluster // 2
    x = rng.normal(size=(200, F))
    w, b = rng.normal(size=(2, F)), np.zeros(2)
    det, got = fit_score("knn", outputs(feats, w, b), labels, outputs(x, w, b), k=1, centroids=2)
    centres = unit(np.stack([unit(feats[cluster == c]).mean(0) for c in range(4)]))
    bank = det.prototypes().numpy()
    assert bank.shape == (4, F) and det.bank_.shape == (600, F)  # the stored bank stays raw
    np.testing.assert_allclose(np.sort(bank @ centres.T, axis=1)[:, -1], 1, atol=1e-6)
    np.testing.assert_allclose(got, (unit(x) @ centres.T).max(1) - 1, atol=1e-5)
    # Restored from its stored state (the raw bank), it re-clusters to the same centroids.
    again = type(det).restore(det.params(), *det.fitted_state())
    torch.testing.assert_close(again.prototypes(), det.prototypes(), rtol=0, atol=0)


def test_knn_unknown_search_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown KNN search 'ball'"):
        make_detector("knn", search="ball")
    with pytest.raises(ValueError, match="eps is the k-d tree's approximation"):
        make_detector("knn", search="brute", eps=1.0)
    with pytest.raises(ValueError, match="centroids per class must be 0"):
        make_detector("knn", centroids=-1)


def test_knn_bank_is_class_balanced_seeded_and_bounded():
    feats, labels, w, b = data(2000)
    a, _ = fit_score(
        "knn", outputs(feats, w, b), labels, outputs(feats[:5], w, b), bank_size=100, seed=3
    )
    b2, _ = fit_score(
        "knn", outputs(feats, w, b), labels, outputs(feats[:5], w, b), bank_size=100, seed=3
    )
    assert a.bank_.shape == (100, F)
    torch.testing.assert_close(a.bank_, b2.bank_)


def test_knn_bank_smaller_than_k_is_a_clear_error():
    feats, labels, w, b = data(8)
    det = make_detector("knn", k=10).fit(outputs(feats, w, b), torch.from_numpy(labels))
    with pytest.raises(ValueError, match="holds 8 rows, fewer than k = 10"):
        det.score(outputs(feats, w, b))


def test_vim_matches_formula():
    feats, labels, w, b = data()
    x, *_ = data(200, seed=1)
    det, got = fit_score("vim", outputs(feats, w, b), labels, outputs(x, w, b), dim=5)
    u = -np.linalg.pinv(w) @ b
    _, vecs = np.linalg.eigh((feats - u).T @ (feats - u) / len(feats))
    ns = vecs[:, : F - 5]
    alpha = (feats @ w.T + b).max(1).mean() / np.linalg.norm((feats - u) @ ns, axis=1).mean()
    expected = logsumexp(x @ w.T + b, axis=1) - alpha * np.linalg.norm((x - u) @ ns, axis=1)
    assert det.alpha_ == pytest.approx(alpha, rel=1e-9)
    np.testing.assert_allclose(got, expected, rtol=1e-7)


def test_vim_needs_a_smaller_subspace_and_a_linear_head():
    feats, labels, w, b = data()
    with pytest.raises(ValueError, match="smaller than the 12 features"):
        fit_score("vim", outputs(feats, w, b), labels, outputs(feats, w, b), dim=12)
    no_head = PixelOutputs(torch.zeros(3, K), torch.zeros(3, F))
    with pytest.raises(ValueError, match="linear head"):
        make_detector("vim").fit(no_head, torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("name", ["mahalanobis", "relative_mahalanobis", "vim", "knn"])
def test_streamed_fit_equals_fit_on_everything(name):
    feats, labels, w, b = data(900)
    x, *_ = data(100, seed=4)
    whole = make_detector(name).fit(outputs(feats, w, b), torch.from_numpy(labels))
    streamed = make_detector(name)
    for part in np.array_split(np.arange(900), 7):
        streamed.partial_fit(outputs(feats[part], w, b), torch.from_numpy(labels[part]))
    np.testing.assert_allclose(
        streamed.score(outputs(x, w, b)).numpy(),
        whole.score(outputs(x, w, b)).numpy(),
        rtol=1e-7,
        atol=1e-9,
    )


def test_gen_matches_formula():
    rng = np.random.default_rng(5)
    z = rng.normal(0, 3, (300, 9))
    det = make_detector("gen", gamma=0.1, top_m=5)
    got = det.score(PixelOutputs(torch.from_numpy(z), torch.zeros(300, 1))).numpy()
    p = np.sort(softmax(z, axis=1), axis=1)[:, -5:]
    np.testing.assert_allclose(got, -(p**0.1 * (1 - p) ** 0.1).sum(1), rtol=1e-10)


def test_odin_matches_the_analytic_gradient_of_a_linear_network():
    rng = np.random.default_rng(6)
    w = rng.normal(size=(3, 5))
    x = rng.normal(size=(5, 4, 6))

    class Linear(torch.nn.Module):
        def forward(self, inp):
            logits = torch.einsum("kc,bchw->bkhw", torch.from_numpy(w), inp)
            return logits, inp

    t, eps = 10.0, 0.05
    got = make_detector("odin", temperature=t, epsilon=eps).score_image(
        Linear(), torch.from_numpy(x)[None]
    )[0]
    pix = x.reshape(5, -1).T  # (P, C)
    p = softmax(pix @ w.T / t, axis=1)
    top = p.argmax(1)
    grad = (w[top] - p @ w) / t  # d log p_top / d x for a linear layer
    perturbed = pix + eps * np.sign(grad)
    expected = softmax(perturbed @ w.T / t, axis=1).max(1).reshape(4, 6)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


def test_fused_is_the_mean_of_z_scores_on_the_calibration_pixels_and_restores_exactly():
    feats, labels, w, b = data()
    cal, *_ = data(300, seed=2)
    x, *_ = data(200, seed=1)
    fused = make_detector("fused", components=("gen", "mahalanobis"))
    fused.fit(outputs(feats, w, b), torch.from_numpy(labels))
    with pytest.raises(ValueError, match="not fitted"):
        fused.score(outputs(x, w, b))  # no calibration pixels yet
    for part in np.array_split(np.arange(len(cal)), 3):  # calibration streamed in batches
        fused.calibrate(outputs(cal[part], w, b))
    parts = [
        fit_score(name, outputs(feats, w, b), labels, outputs(v, w, b))[1]
        for name in ("gen", "mahalanobis")
        for v in (cal, x)
    ]
    (gen_cal, gen_x), (maha_cal, maha_x) = parts[:2], parts[2:]
    expected = (
        (gen_x - gen_cal.mean()) / gen_cal.std() + (maha_x - maha_cal.mean()) / maha_cal.std()
    ) / 2
    np.testing.assert_allclose(fused.score(outputs(x, w, b)).numpy(), expected, rtol=1e-9)
    tensors, numbers = fused.fitted_state()
    again = type(fused).restore(fused.params(), tensors, numbers)
    torch.testing.assert_close(again.score(outputs(x, w, b)), fused.score(outputs(x, w, b)))
    with pytest.raises(ValueError, match="two or more pixel-wise detectors"):
        make_detector("fused", components=("gen", "odin"))
