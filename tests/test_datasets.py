import hashlib

import numpy as np
import pytest

from oodseg.datasets import BandNormaliser, load_dataset

PIXELS_PER_CLASS = [
    10776,
    46,
    1428,
    830,
    237,
    483,
    730,
    28,
    478,
    20,
    972,
    2455,
    593,
    205,
    1265,
    386,
    93,
]


def test_embedded_scene_matches_published_counts(indian_pines):
    assert indian_pines.cube.shape == (145, 145, 200)
    assert indian_pines.cube.dtype == np.float32
    assert indian_pines.num_classes == 16
    assert np.bincount(indian_pines.labels.ravel()).tolist() == PIXELS_PER_CLASS
    assert indian_pines.class_names[8] == "Oats"


def test_embedded_scene_equals_the_shared_mat_files(indian_pines, shared_data):
    from scipy.io import loadmat

    mat = shared_data / "indian_pines" / "Indian_pines_corrected.mat"
    digest = hashlib.sha256(mat.read_bytes()).hexdigest()
    assert digest == "ec2f8808710919d566f70f0d4aa885aae1ddfd42b734aba71c5e12ca65450939"
    np.testing.assert_array_equal(
        indian_pines.cube, loadmat(mat)["indian_pines_corrected"].astype(np.float32)
    )


def test_class_lookup_by_name_or_number(indian_pines):
    assert indian_pines.class_id("woods") == 14
    assert indian_pines.class_id("9") == 9
    with pytest.raises(ValueError, match="no class 'Maize'"):
        indian_pines.class_id("Maize")
    with pytest.raises(ValueError, match="no class '17'"):
        indian_pines.class_id("17")


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ValueError, match="unknown dataset 'pavia'.*indian_pines"):
        load_dataset("pavia")


def test_normaliser_uses_only_the_training_region(indian_pines):
    region = np.zeros(indian_pines.labels.shape, bool)
    region[:50] = True
    norm = BandNormaliser.fit(indian_pines.cube, region)
    out = norm(indian_pines.cube)
    np.testing.assert_allclose(out[region].mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(out[region].std(axis=0), 1, atol=1e-3)
    # Test-region statistics are not forced to zero mean.
    assert np.abs(out[~region].mean(axis=0)).max() > 0.05


def test_spectral_pca_input_is_scikit_learns_pca_of_the_training_pixels(indian_pines):
    """collect() merges the bands' covariance image by image; the projection it gives equals
    scikit-learn's PCA of the standardised training pixels (up to each component's sign), scaled
    by one factor to a mean variance of 1, so the components keep their relative variances."""
    from sklearn.decomposition import PCA

    from oodseg.engine import collect
    from oodseg.sources import scene_collection

    collection = collect(scene_collection(indian_pines, "blocks"), input_pca=12)
    norm = collection.normaliser
    assert norm.channels == 12 and norm.projection.shape == (12, 200)
    region = collection.load(0).normalise
    pixels = indian_pines.cube[region].astype(np.float64)
    z = (pixels - norm.mean) / norm.std
    ours = norm(pixels)
    ref = PCA(12, svd_solver="full").fit(z)
    theirs = ref.transform(z) / np.sqrt(ref.explained_variance_.mean() * (len(z) - 1) / len(z))
    signs = np.sign((ours * theirs).sum(0))
    np.testing.assert_allclose(ours, theirs * signs, rtol=1e-3, atol=2e-3)
    variances = np.cov(ours.T, ddof=0)
    np.testing.assert_allclose(variances, np.diag(np.diag(variances)), atol=1e-4)  # uncorrelated
    assert np.diag(variances).mean() == pytest.approx(1, abs=1e-4)
    np.testing.assert_allclose(
        np.diag(variances), ref.explained_variance_ / ref.explained_variance_.mean(), rtol=1e-3
    )
    with pytest.raises(ValueError, match="--input-pca keeps between 1 and 199"):
        norm.with_pca(np.eye(200), 200)
