import hashlib

import numpy as np
import pytest
from PIL import Image

from oodseg.datasets import BandNormaliser, load_dataset
from oodseg.io import read_image, read_mask
from oodseg.manifest import colour_bands, load_manifest, read_sample

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


def _png(path, array, mode=None, **save):
    Image.fromarray(array, mode).save(path, **save)
    return path


def test_pngs_and_jpegs_read_as_a_viewer_shows_them(tmp_path):
    """RGBA and grey-alpha lose their alpha, palette PNGs give colours as images and indices as
    masks, 16-bit masks keep their values, bilevel masks are 0 / 1, EXIF orientation applies."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, np.full((6, 9), 7, np.uint8)])
    np.testing.assert_array_equal(read_image(_png(tmp_path / "a.png", rgba)), rgb)
    grey = rgb[..., 0]
    la = Image.fromarray(np.dstack([grey, grey]), "LA")
    la.save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), grey[..., None])
    index = rng.integers(0, 4, (6, 9), dtype=np.uint8)
    p = Image.fromarray(index, "P")
    p.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    p.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png"), index)
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), colours[index])
    sixteen = (index.astype(np.uint16) + 300).astype(np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "i16.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "i16.png"), sixteen)
    Image.fromarray(index > 1).save(tmp_path / "bilevel.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "bilevel.png"), (index > 1).astype(int))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    Image.fromarray(rgb).save(tmp_path / "turned.jpg", exif=exif)
    Image.fromarray(rgb).save(tmp_path / "stored.jpg")  # the same pixels, no orientation
    turned = read_image(tmp_path / "turned.jpg")
    assert turned.shape == (9, 6, 3)  # as shown: the stored 6 x 9 turned clockwise
    np.testing.assert_array_equal(turned, np.rot90(read_image(tmp_path / "stored.jpg"), -1))


def test_a_mask_a_pixel_off_the_image_size_is_refused_with_both_sizes_and_the_fix(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((8, 8, 3), np.float32))
    Image.fromarray(np.ones((8, 9), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "d.yaml").write_text("classes: [x]\nimages:\n  - {image: a.npy, mask: a.png}\n")
    data = load_manifest(tmp_path / "d.yaml")
    with pytest.raises(
        ValueError, match=r"a.png: mask is 8x9, image a.npy is 8x8; resize the mask"
    ):
        read_sample(data, data.items[0])


def test_grey_photos_among_colour_ones_read_as_three_equal_bands(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    _png(tmp_path / "colour.png", rgb)
    _png(tmp_path / "grey.jpg", grey, quality=100)
    np.save(tmp_path / "cube.npy", np.zeros((8, 8, 5), np.float32))
    mask = _png(tmp_path / "m.png", np.ones((8, 8), np.uint8))
    (tmp_path / "d.yaml").write_text(
        "classes: [x]\nimages:\n"
        + "".join(f"  - {{image: {f}, mask: {mask.name}}}\n" for f in ("colour.png", "grey.jpg"))
    )
    data = load_manifest(tmp_path / "d.yaml")
    bands = colour_bands(data)
    assert bands == 3
    read = read_sample(data, data.items[1], bands).image
    assert read.shape == (8, 8, 3)
    np.testing.assert_array_equal(read[..., 0], read[..., 2])
    np.testing.assert_allclose(read[..., 0], np.asarray(Image.open(tmp_path / "grey.jpg")))
    # Grey photos alone keep their one band; other files never change theirs.
    (tmp_path / "g.yaml").write_text("classes: [x]\nimages:\n  - {image: grey.jpg, mask: m.png}\n")
    assert colour_bands(load_manifest(tmp_path / "g.yaml")) is None
    (tmp_path / "c.yaml").write_text("classes: [x]\nimages:\n  - {image: cube.npy, mask: m.png}\n")
    data = load_manifest(tmp_path / "c.yaml")
    with pytest.raises(ValueError, match=r"cube.npy: 5 bands, but .* has 3; save every image"):
        read_sample(data, data.items[0], 3)
