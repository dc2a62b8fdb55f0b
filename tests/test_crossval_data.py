"""`oodseg crossval --data` on users' densely labelled collections, built from real data: Indian
Pines crops in two file formats (hyperspectral) and Endoscapes frames at two sizes (RGB, read from
../shared), both protocols end to end; colour masks through a palette (JPEG-compressed); a fold with
no test pixel skipped; bad manifests refused before any work."""

import json

import numpy as np
import pytest
import scipy.io
import yaml
from PIL import Image
from typer.testing import CliRunner

from oodseg.cli import app
from oodseg.config import BACKGROUND
from oodseg.engine import collect
from oodseg.manifest import load_manifest, read_sample
from oodseg.metrics import ood_metrics
from oodseg.sources import dataset_collection

runner = CliRunner()
# Indian Pines: four classes kept, every other labelled pixel declared background (value 9).
IP_CLASSES = ("Corn-notill", "Soybean-mintill", "Grass-trees", "Woods")
IP_IDS = (2, 11, 6, 14)
# The small network on every image: the bounds below were measured with it.
QUICK = ["--epochs", "8", "--patches-per-epoch", "32", "--device", "cpu", "--preset", "small"]
# Eight epochs on five crops is chaotic: float rounding alone moves the background fold a lot.
# Measured on the 2-core CPU (best mean AUROC of gen and mahalanobis) over torch's kernel sets
# (ATEN_CPU_CAPABILITY default / avx2 / avx512) and 1 or 2 threads: background 0.74-0.84 (gen
# 0.74-0.84), loco 0.82-0.85; CI's machine gave background 0.710. Shuffled scores give ~0.5.
HSI_BOUND = {"background": 0.65, "loco": 0.72}
# Measured before score smoothing became the default, and still passed with it (3 training
# frames): loco (gallbladder, tool) gen 0.751, mahalanobis 0.723; background
# gen 0.444, mahalanobis 0.554 -- three frames do not teach the sparse method the background, while
# the fully supervised baseline, trained on it, reaches 0.914.
RGB_BOUND = {"loco": 0.68, "fully_supervised": 0.85}


def indian_pines_collection(scene, folder, *, drop_test_class: int | None = None):
    """A 3 x 3 grid of 48 x 48 crops, alternately .npy and .mat cubes, PNG index masks; the
    split is given for every crop (5 train, 2 val, 2 test). ``drop_test_class`` unlabels that
    class in the test crops, so that its fold has no test pixel."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.zeros_like(scene.labels)
    for new, old in enumerate(IP_IDS, 1):
        labels[scene.labels == old] = new
    labels[(scene.labels > 0) & (labels == 0)] = 9
    # Both test crops together hold all four classes and background.
    splits = ["train", "train", "test", "val", "train", "val", "train", "test", "train"]
    images = []
    for n, (y, x) in enumerate((y, x) for y in (0, 48, 96) for x in (0, 48, 96)):
        cube = scene.cube[y : y + 48, x : x + 48].astype(np.uint16)
        mask = labels[y : y + 48, x : x + 48].astype(np.uint8)
        if splits[n] == "test" and drop_test_class is not None:
            mask[mask == drop_test_class] = 0
        if n % 2:
            scipy.io.savemat(folder / f"crop{n}.mat", {"cube": cube})
            path = f"crop{n}.mat"
        else:
            np.save(folder / f"crop{n}.npy", cube)
            path = f"crop{n}.npy"
        Image.fromarray(mask).save(folder / f"crop{n}.png")
        images.append({"image": path, "mask": f"crop{n}.png", "split": splits[n]})
    manifest = {"classes": list(IP_CLASSES), "background": [9], "images": images}
    (folder / "data.yaml").write_text(yaml.safe_dump(manifest))
    return folder / "data.yaml"


@pytest.fixture(scope="module")
def hsi_run(indian_pines, tmp_path_factory):
    root = tmp_path_factory.mktemp("hsi")
    manifest = indian_pines_collection(indian_pines, root / "data")
    out = root / "run"
    args = ["crossval", "--data", str(manifest), "--out", str(out), *QUICK]
    result = runner.invoke(app, [*args, "--detectors", "gen,mahalanobis"])
    assert result.exit_code == 0, result.output
    return json.loads((out / "results.json").read_text()), out


@pytest.mark.slow
def test_hyperspectral_collection_runs_both_protocols(hsi_run):
    res, out = hsi_run
    assert res["dataset"] == "data" and res["images"] == 9
    assert res["credit"] == "" and "the manifest's split" in res["description"]
    assert list(res["protocols"]) == ["background", "loco"]
    # Declared background, but hyperspectral: --unlabelled auto keeps the paper's training (the PU
    # head inverted this background: best AUROC 0.74 -> 0.24 at 60 epochs, PU weight 1).
    assert res["config"]["train"]["unlabelled"] == "ignore"
    background, loco = res["protocols"]["background"], res["protocols"]["loco"]
    assert [r["held_out"] for r in background["folds"]] == ["background", "background"]
    assert {r["held_out"] for r in loco["folds"]} == set(IP_CLASSES)
    assert len(loco["folds"]) == 2 * len(IP_CLASSES)
    assert [b["method"] for b in background["baselines"]] == [
        "closed-set arg-max (no OOD)",
        "fully supervised (background as a class; dense masks)",
    ]
    for protocol, bound in HSI_BOUND.items():
        summary = res["protocols"][protocol]["summary"]
        assert max(s["auroc"]["mean"] for s in summary.values()) > bound, protocol
    md = (out / "results.md").read_text()
    assert "Indian" not in md and "Endoscapes" not in md  # the user's data set, not a built-in
    for png in ("roc_background.png", "roc_loco.png", "histograms_loco.png"):
        assert (out / png).stat().st_size > 10_000
    assert len(list(out.glob("panel_*.png"))) == 1 + len(IP_CLASSES)


@pytest.mark.slow
def test_shuffled_scores_fail_the_bound(hsi_run):
    _, out = hsi_run
    rng = np.random.default_rng(0)
    (path,) = (out / "folds").glob("*background*.npz")
    with np.load(path) as z:
        id_s, ood_s = z["gen|id_scores"], z["gen|ood_scores"]
    scores = rng.permutation(np.r_[id_s, ood_s])
    shuffled = ood_metrics(scores[: len(id_s)], scores[len(id_s) :])["auroc"]
    assert shuffled < HSI_BOUND["background"]
    assert ood_metrics(id_s, ood_s)["auroc"] > HSI_BOUND["background"]


def test_a_fold_without_test_pixels_is_skipped_and_the_others_kept(indian_pines, tmp_path):
    manifest = indian_pines_collection(indian_pines, tmp_path / "data", drop_test_class=3)
    out = tmp_path / "run"
    args = ["crossval", "--data", str(manifest), "--out", str(out), *QUICK]
    result = runner.invoke(
        app, [*args, "--epochs", "2", "--detectors", "msp", "--protocols", "loco"]
    )
    assert result.exit_code == 0, result.output
    loco = json.loads((out / "results.json").read_text())["protocols"]["loco"]
    assert loco["skipped_folds"] == [
        {"held_out": "Grass-trees", "reason": "no test pixel of Grass-trees"}
    ]
    assert {r["held_out"] for r in loco["folds"]} == {"Corn-notill", "Soybean-mintill", "Woods"}
    # Not a terminal: one line per stage, with its count (the checking pass reads every image).
    lines = result.output.splitlines()
    assert sum(line.startswith("checking the images and masks: 9/9 in ") for line in lines) == 1
    assert sum(line.startswith("scoring the test images: ") for line in lines) == 3
    assert sum(line.startswith("training: done in ") for line in lines) == 3


FRAMES = {
    "train": ("100_32425", "100_34675", "102_34250"),
    "val": ("131_41125", "131_47125", "144_17175"),
    "test": ("176_10925", "176_12425", "165_23650"),
}


def frames_collection(root, folder, *, colour: bool = False, lossless: bool = False):
    """Nine Endoscapes frames (three per official split, among those showing all six
    structures) at two sizes: JPEG frames, index masks (PNG) or colour masks (JPEG, quality 85)
    through a palette; with ``lossless``, PNG colour masks with 1 % of their pixels one step off
    their palette colour (as resampled masks carry), the count in ``nudged.txt``."""
    folder.mkdir(parents=True)
    names = [*FRAMES["train"], *FRAMES["val"], *FRAMES["test"]]
    splits = [s for s in ("train", "val", "test") for _ in range(3)]
    palette = {
        "cystic_plate": [255, 0, 0],
        "calot_triangle": [0, 255, 0],
        "cystic_artery": [0, 0, 255],
        "cystic_duct": [255, 255, 0],
        "gallbladder": [255, 0, 255],
        "tool": [0, 255, 255],
        "background": [40, 40, 40],
        "ignore": [255, 255, 255],
    }
    colours = np.array(
        [palette["background"], *list(palette.values())[:6]]
        + [[0, 0, 0]] * 248
        + [palette["ignore"]],
        np.uint8,
    )
    images = []
    for n, (name, split) in enumerate(zip(names, splits, strict=True)):
        size = (214, 120) if n % 2 else (256, 144)  # two sizes (width, height)
        frame = Image.open(root / f"{split}_seg" / f"{name}.jpg").convert("RGB")
        mask = Image.open(root / "semseg" / f"{name}.png")
        frame.resize(size, Image.BILINEAR).save(folder / f"{name}.jpg", quality=92)
        small = np.array(mask.resize(size, Image.NEAREST))
        small = np.where(small > 6, 255, small).astype(np.uint8)
        if colour and lossless:
            rgb = colours[small]
            nudged = np.random.default_rng(n).random(small.shape) < 0.01
            blue = rgb[..., 2]
            blue[nudged] = np.where(blue[nudged] == 255, 254, blue[nudged] + 1)
            Image.fromarray(rgb).save(folder / f"{name}_mask.png")
            mask_file = f"{name}_mask.png"
            total = int((folder / "nudged.txt").read_text()) if n else 0
            (folder / "nudged.txt").write_text(str(total + int(nudged.sum())))
        elif colour:
            Image.fromarray(colours[small]).save(folder / f"{name}_mask.jpg", quality=85)
            mask_file = f"{name}_mask.jpg"
        else:
            Image.fromarray(small).save(folder / f"{name}_mask.png")
            mask_file = f"{name}_mask.png"
        np.save(folder / f"{name}_truth.npy", small)
        images.append({"image": f"{name}.jpg", "mask": mask_file, "split": split})
    manifest = {"classes": list(palette)[:6], "images": images}
    if colour:
        manifest |= {"background": ["background"], "palette": palette}
    else:
        manifest |= {"background": [0], "ignore": 255}
    (folder / "data.yaml").write_text(yaml.safe_dump(manifest))
    return folder / "data.yaml"


@pytest.fixture(scope="module")
def endoscapes(shared_data):
    path = shared_data / "endoscapes_seg50"
    if not path.is_dir():
        pytest.skip(f"{path} is absent: Endoscapes-Seg50 is not beside this checkout")
    return path


@pytest.mark.slow
def test_rgb_frames_of_two_sizes_run_end_to_end(endoscapes, tmp_path):
    manifest = frames_collection(endoscapes, tmp_path / "data")
    out = tmp_path / "run"
    args = ["crossval", "--data", str(manifest), "--out", str(out), *QUICK]
    result = runner.invoke(
        app, [*args, "--detectors", "gen,mahalanobis", "--hold-out", "gallbladder,tool"]
    )
    assert result.exit_code == 0, result.output
    res = json.loads((out / "results.json").read_text())
    assert "images at their own sizes" in res["description"]
    assert list(res["protocols"]) == ["background", "loco"]
    assert {r["held_out"] for r in res["protocols"]["loco"]["folds"]} == {"gallbladder", "tool"}
    summary = res["protocols"]["loco"]["summary"]
    assert max(s["auroc"]["mean"] for s in summary.values()) > RGB_BOUND["loco"]
    assert res["protocols"]["background"]["baselines"][1]["auroc"] > RGB_BOUND["fully_supervised"]
    row = res["protocols"]["background"]["folds"][0]
    assert row["images_with_both"] >= 2 and row["n_id"] > 1000


def test_colour_masks_snap_jpeg_noise_to_the_palette(endoscapes, tmp_path):
    manifest = frames_collection(endoscapes, tmp_path / "data", colour=True)
    data = load_manifest(manifest)
    collection = collect(dataset_collection(data, source=str(manifest)))
    counts = data.colour_summary()
    assert len(data.colour_counts) == 9  # one entry per mask, however often it is read
    total = sum(h * w for h, w in collection.sides)
    # Measured at the default tolerance (80): 44 % of pixels snapped (JPEG noise), 2.1 % ignored.
    assert counts["snapped"] > 0.3 * total and counts["ignored"] < 0.03 * total
    for i in collection.ids("truth") + collection.ids("dense"):
        s = collection.load(i)
        dense = s.truth if s.truth.any() else s.dense
        truth = np.load(tmp_path / "data" / f"{s.name}_truth.npy")
        expected = np.where(truth == 0, BACKGROUND, np.where(truth == 255, 0, truth))
        assert (dense == expected).mean() > 0.95  # JPEG blurs class borders, nothing more


def test_a_run_on_lossless_colour_masks_just_off_the_palette_needs_no_conversion(
    endoscapes, tmp_path
):
    manifest = frames_collection(endoscapes, tmp_path / "data", colour=True, lossless=True)
    out = tmp_path / "run"
    args = ["crossval", "--data", str(manifest), "--out", str(out), *QUICK, "--epochs", "2"]
    result = runner.invoke(
        app, [*args, "--detectors", "gen", "--protocols", "background", "--no-baselines"]
    )
    assert result.exit_code == 0, result.output
    res = json.loads((out / "results.json").read_text())
    nudged = int((tmp_path / "data" / "nudged.txt").read_text())
    assert res["colour_masks"] == {"snapped": nudged, "ignored": 0}
    assert f"colour masks: {nudged} pixels snapped to the palette, 0 ignored" in result.output
    (fold,) = res["protocols"]["background"]["folds"]
    assert np.isfinite(fold["auroc"]) and fold["n_id"] > 1000 and fold["n_ood"] > 1000


def test_lossless_colour_masks_off_the_palette_snap_or_are_ignored_and_are_counted(tmp_path):
    """A resampled PNG colour mask: pixels near a palette colour take it, far ones are ignored."""
    palette = {"a": [255, 0, 0], "b": [0, 0, 255], "unlabelled": [0, 0, 0]}
    masks = {}
    for i in range(3):
        m = np.zeros((8, 8, 3), np.uint8)
        m[:2] = (255, 0, 0)
        m[2:4] = (250, 3, 1)  # near a: snapped
        m[4:6] = (0, 0, 255)
        m[6, :5] = (0, 0, 1)  # near unlabelled: snapped, never annotated
        m[7] = (128, 128, 128)  # far from every colour: ignored
        masks[f"m{i}.png"] = m
    manifest = _write(
        tmp_path, {"classes": ["a", "b"], "images": _images(), "palette": palette}, masks
    )
    data = load_manifest(manifest)
    mask = read_sample(data, data.items[0]).mask
    assert (mask[:4] == 1).all() and (mask[4:6] == 2).all() and (mask[6:] == 0).all()
    assert data.colour_counts[str(tmp_path / "m0.png")] == {"snapped": 16 + 5, "ignored": 8}


def _write(folder, manifest, masks=None):
    folder.mkdir(parents=True, exist_ok=True)
    for name, mask in (masks or {}).items():
        Image.fromarray(mask).save(folder / name)
    for item in manifest.get("images", []):
        np.save(folder / item["image"], np.ones((8, 8, 2), np.float32))
    (folder / "data.yaml").write_text(yaml.safe_dump(manifest))
    return folder / "data.yaml"


def _mask(values):
    m = np.zeros((8, 8), np.uint8)
    for i, v in enumerate(values):
        m[i] = v
    return m


def _images(n=3, mask=True):
    return [{"image": f"i{i}.npy", **({"mask": f"m{i}.png"} if mask else {})} for i in range(n)]


@pytest.mark.parametrize(
    "manifest,masks,message",
    [
        (
            {
                "classes": ["a", "b"],
                "images": _images(),
                "palette": {"a": [1, 2, 3], "c": [0, 0, 0]},
            },
            {},
            "named 'c', which is no class",
        ),
        (
            {
                "classes": ["a", "b"],
                "images": _images(),
                "palette": {"a": [1, 2, 3], "b": [1, 2, 3]},
            },
            {},
            "palette colours repeat",
        ),
        (
            {
                "classes": ["a", "b"],
                "images": _images(),
                "palette": {"a": [1, 2, 3], "b": [0, 0, 0]},
                "palette_strict": True,
            },
            {f"m{i}.png": np.zeros((8, 8, 3), np.uint8) + 7 for i in range(3)},
            "unknown colour [7, 7, 7] on 64 pixels, and the manifest sets palette_strict: true; "
            "remove that key",
        ),
        (
            {"classes": ["a", "b", "c"], "images": _images()},
            {f"m{i}.png": _mask([1, 2]) for i in range(3)},
            "no pixel of class c in any mask",
        ),
        (
            {"classes": ["a", "b"], "background": [9], "images": _images()},
            {f"m{i}.png": _mask([1, 2]) for i in range(3)},
            "background / ood values [9] occur in no mask",
        ),
        (
            {"classes": ["a", "b"], "images": _images(mask=False)},
            {},
            "needs a dense mask for every image",
        ),
        (
            {"classes": ["a", "b"], "images": _images(2)},
            {f"m{i}.png": _mask([1, 2]) for i in range(2)},
            "a split by image needs at least 3",
        ),
    ],
)
def test_bad_manifests_are_refused_before_any_work(tmp_path, manifest, masks, message):
    path = _write(tmp_path / "data", manifest, masks)
    out = tmp_path / "run"
    result = runner.invoke(app, ["crossval", "--data", str(path), "--out", str(out), *QUICK])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert message in text, text
    assert "data" in text  # the error names the file (or its folder)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data"]
