"""Your own data: every reader on real Indian Pines crops, train -> bundle -> reload in a new
process -> bit-identical predictions, the CLI, and every bad input with nothing half-written."""

import json
import subprocess
import sys
from dataclasses import replace

import h5py
import numpy as np
import pytest
import scipy.io
import spectral.io.envi as envi
import tifffile
import torch
import yaml
from browser import check_viewer, headless_dom
from PIL import Image
from typer.testing import CliRunner

from oodseg.annotate import simulate_annotations
from oodseg.bundle import load_bundle, train
from oodseg.cli import app
from oodseg.config import ScoringConfig, TrainConfig
from oodseg.detectors import DETECTORS, InputDetector, PixelOutputs, make_detector
from oodseg.inference import Predictor
from oodseg.io import read_image, read_mask
from oodseg.manifest import from_folders, load_manifest, read_all
from oodseg.model import Ensemble

CLASSES = ("Corn-notill", "Soybean-mintill", "Woods")
FORMATS = ("hdr", "mat", "mat73", "npy", "npz", "tif", "h5")
OTHER = 9  # mask value of the other Indian Pines classes in evaluation masks


def train_command(data, out, *extra: str) -> list[str]:
    """``oodseg train`` in a new process, quick settings."""
    return [
        sys.executable,
        "-m",
        "oodseg",
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--device",
        "cpu",
        *extra,
    ]


def predict_in_new_process(model, image, tmp_path) -> tuple[np.ndarray, np.ndarray]:
    """Load the bundle and predict the image in a fresh Python process."""
    code = (
        "import sys, numpy as np; from oodseg import load_bundle; from oodseg.io import read_image; "
        "l, s = load_bundle(sys.argv[1]).predict(read_image(sys.argv[2])); "
        "np.save(sys.argv[3], l); np.save(sys.argv[4], s)"
    )
    paths = [str(tmp_path / n) for n in ("labels.npy", "scores.npy")]
    subprocess.run([sys.executable, "-c", code, str(model), str(image), *paths], check=True)
    return np.load(paths[0]), np.load(paths[1])


# The small network: these tests are about the bundle, not the network (tests/test_pretrained.py)
QUICK = TrainConfig(preset="small", epochs=2, patches_per_epoch=8, batch_size=4, device="cpu")


def write_image(path_stem, cube: np.ndarray, fmt: str):
    """Write an (H, W, C) cube in one of the supported formats; returns the file to read."""
    if fmt == "hdr":
        envi.save_image(f"{path_stem}.hdr", cube, force=True, interleave="bil")
        return path_stem.with_suffix(".hdr")
    path = path_stem.with_suffix({"mat73": ".mat"}.get(fmt, f".{fmt}"))
    if fmt == "mat":
        scipy.io.savemat(path, {"cube": cube, "note": np.zeros(3)})
    elif fmt == "mat73":  # MATLAB v7.3 = HDF5 with column-major (transposed) arrays
        with h5py.File(path, "w") as f:
            f["cube"] = cube.T
    elif fmt == "npy":
        np.save(path, cube)
    elif fmt == "npz":
        np.savez_compressed(path, cube=cube)
    elif fmt == "tif":  # one page per band
        tifffile.imwrite(path, np.moveaxis(cube, -1, 0))
    elif fmt == "h5":
        with h5py.File(path, "w") as f:
            f["data/cube"] = cube
    return path


@pytest.fixture(scope="module")
def crops(indian_pines):
    """Nine 48 x 48 crops of the real scene: the image, its dense labels (CLASSES as 1..3, every
    other class as OTHER) and strokes over CLASSES. Crop 2 is the validation image."""
    labels = np.zeros_like(indian_pines.labels)
    for k, name in enumerate(CLASSES, start=1):
        labels[indian_pines.labels == indian_pines.class_id(name)] = k
    labels[(indian_pines.labels > 0) & (labels == 0)] = OTHER  # every other class: OOD truth
    out = []
    corners = [(10, 70), (60, 90), (95, 40), (0, 0), (0, 97), (50, 0), (97, 97), (40, 40), (97, 0)]
    for i, (y, x) in enumerate(corners):
        cube = indian_pines.cube[y : y + 48, x : x + 48].astype(np.float32)
        dense = labels[y : y + 48, x : x + 48]
        strokes = simulate_annotations(
            np.where(dense == OTHER, 0, dense), budget=0.2, seed=i
        ).labels
        out.append((cube, dense, strokes))
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_reads_back_the_real_cube(crops, tmp_path, fmt):
    cube = crops[0][0]
    path = write_image(tmp_path / "scan", cube, fmt)
    got = read_image(path)
    assert got.shape == cube.shape
    np.testing.assert_array_equal(got, cube)


def test_png_and_jpeg_images_and_three_channel_masks(crops, tmp_path):
    rgb = (np.clip(crops[0][0][..., [27, 16, 7]] / 8000, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)
    assert np.abs(read_image(tmp_path / "a.jpg").astype(int) - rgb).mean() < 3
    mask = crops[0][2].astype(np.uint8)
    Image.fromarray(np.dstack([mask] * 3)).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask)


FITTED = sorted(n for n, cls in DETECTORS.items() if not issubclass(cls, InputDetector))


@pytest.mark.parametrize("name", FITTED)
def test_every_detector_restores_from_its_stored_state(name):
    rng = np.random.default_rng(0)
    w, b = torch.from_numpy(rng.normal(size=(3, 8))), torch.from_numpy(rng.normal(size=3))
    feats = torch.from_numpy(rng.normal(size=(300, 8)))
    known = torch.from_numpy(rng.normal(size=300))  # a known-vs-unknown head's logit (pu)

    def outputs(x: torch.Tensor, k: torch.Tensor) -> PixelOutputs:
        return PixelOutputs(x @ w.T + b, x, w, b, k)

    train_out = outputs(feats, known)
    labels = torch.from_numpy(rng.integers(0, 3, 300))
    det = make_detector(name).fit(train_out, labels)
    if det.needs_calibration:  # fused: z-scores from calibration pixels
        det.calibrate(outputs(feats[:100], known[:100]))
    tensors, numbers = det.fitted_state()
    json.dumps(det.params())  # plain values only
    restored = type(det).restore(json.loads(json.dumps(det.params())), tensors, numbers)
    x = torch.from_numpy(rng.normal(size=(50, 8)))
    test_out = outputs(x, torch.from_numpy(rng.normal(size=50)))
    torch.testing.assert_close(restored.score(test_out), det.score(test_out), rtol=0, atol=0)


@pytest.fixture(scope="module")
def dataset(crops, tmp_path_factory):
    """A manifest whose eight training images use every hyperspectral format (they must agree on
    the band count), with sparse PNG masks; crop 2 is the validation image."""
    root = tmp_path_factory.mktemp("data")
    entries = []
    train_formats = iter(FORMATS * 2)
    for i, (cube, _, strokes) in enumerate(crops):
        fmt = next(train_formats) if i != 2 else "tif"
        image = write_image(root / f"scan{i}", cube, fmt)
        Image.fromarray(strokes.astype(np.uint8)).save(root / f"scan{i}_mask.png")
        entry = {"image": image.name, "mask": f"scan{i}_mask.png"}
        if i == 2:
            entry["split"] = "val"
        entries.append(entry)
    manifest = root / "data.yaml"
    manifest.write_text(yaml.safe_dump({"classes": list(CLASSES), "images": entries}))
    return manifest


@pytest.fixture(scope="module")
def bundle_dir(dataset, tmp_path_factory):
    torch.manual_seed(0)
    bundle = train(
        load_manifest(dataset),
        detector="mahalanobis",
        config=QUICK,
        scoring=ScoringConfig(threshold="tpr"),
    )
    out = tmp_path_factory.mktemp("models") / "tissue"
    bundle.save(out)
    return bundle, out


def test_bundle_reloads_in_a_new_process_and_predicts_bit_identical_maps(
    bundle_dir, crops, tmp_path
):
    bundle, out = bundle_dir
    cube = crops[1][0]
    labels, scores = bundle.predict(cube)
    assert labels.shape == scores.shape == cube.shape[:2]
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    np.save(tmp_path / "cube.npy", cube)
    again = predict_in_new_process(out, tmp_path / "cube.npy", tmp_path)
    np.testing.assert_array_equal(again[0], labels)
    np.testing.assert_array_equal(again[1], scores)
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["class_names"] == list(CLASSES) and meta["bands"] == 200
    assert meta["detector"]["name"] == "mahalanobis" and meta["tpr"] == 0.95
    assert {"oodseg", "torch", "monai"} <= set(meta["versions"])
    assert sorted(p.name for p in out.iterdir()) == [
        "bundle.json",
        "detector.safetensors",
        "model.safetensors",
    ]


def test_threshold_keeps_the_target_share_of_calibration_pixels(bundle_dir, crops):
    bundle, _ = bundle_dir
    cube, _, strokes = crops[2]  # the validation image
    _, scores = bundle.predict(cube)
    kept = (scores[strokes > 0] >= bundle.threshold).mean()
    assert kept >= 0.95 and kept < 0.95 + 2 / (strokes > 0).sum() + 1e-9


def test_cli_train_then_predict_a_folder(dataset, crops, tmp_path):
    runner = CliRunner()
    model = tmp_path / "model"
    result = runner.invoke(
        app,
        ["train", "--data", str(dataset), "--out", str(model), "--epochs", "1", "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    # Hyperspectral crops: the small network, no known-vs-unknown head, and the bundle says
    # which network and detector and why.
    shown = " ".join(result.output.split())
    assert "network small (auto: the pretrained encoder for RGB images" in shown
    assert "detector gen: the default: no known-vs-unknown head was trained" in shown
    scans = tmp_path / "scans"
    scans.mkdir()
    for i, fmt in enumerate(("npy", "hdr")):
        write_image(scans / f"new{i}", crops[i][0], fmt)
    pred = tmp_path / "pred"
    result = runner.invoke(
        app,
        [
            "predict",
            "--model",
            str(model),
            "--input",
            str(scans),
            "--out",
            str(pred),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in pred.iterdir())
    assert names == [
        f"new{i}_{kind}" for i in range(2) for kind in ("labels.png", "overlay.png", "scores.tif")
    ]
    labels = np.asarray(Image.open(pred / "new0_labels.png"))
    scores = tifffile.imread(pred / "new0_scores.tif")
    assert labels.shape == scores.shape == (48, 48) and scores.dtype == np.float32
    assert set(np.unique(labels)) <= {0, 1, 2, 3}


def test_folders_matched_by_stem(crops, tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    for i, (cube, _, strokes) in enumerate(crops):
        np.save(tmp_path / "img" / f"s{i}.npy", cube)
        Image.fromarray(strokes.astype(np.uint8)).save(tmp_path / "msk" / f"s{i}.png")
    data = from_folders(tmp_path / "img", tmp_path / "msk", CLASSES)
    samples = read_all(data)
    assert [s.name for s in samples] == [f"s{i}" for i in range(len(crops))]
    np.testing.assert_array_equal(samples[1].mask, crops[1][2])
    (tmp_path / "msk" / "s2.png").unlink()  # an image without its mask
    with pytest.raises(FileNotFoundError, match="no mask for s2.npy"):
        from_folders(tmp_path / "img", tmp_path / "msk", CLASSES)


def _bad_case(case, crops, root):
    """Write a one-image data set broken in one way; returns (manifest, expected message)."""
    cube, _, strokes = (c.copy() for c in crops[0])
    mask = strokes.astype(np.uint8)
    image_name, mask_name = "scan.npy", "mask.png"
    message = None
    if case == "missing file":
        image_name, message = "absent.npy", "absent.npy: file not found"
    elif case == "corrupt file":
        (root / "scan.mat").write_bytes(b"MATLAB 5.0 MAT-file garbage" * 3)
        image_name, message = "scan.mat", "scan.mat: cannot read it"
    elif case == "truncated file":
        np.save(root / "full.npy", cube)
        (root / "scan.npy").write_bytes((root / "full.npy").read_bytes()[:5000])
        message = "scan.npy: cannot read it"
    elif case == "shape mismatch":
        mask, message = mask[:40], "mask is 40x48, image scan.npy is 48x48"
    elif case == "value outside classes":
        mask[0, 0], message = 9, "values 9 are outside the declared classes 1..3"
    elif case == "NaN in cube":
        cube[3, 4, 5], message = np.nan, "1 NaN or Inf values (pass --nan-policy zero"
    elif case == "class without annotation":
        mask[mask == 2], message = 0, "no annotated pixel of class Soybean-mintill"
    elif case == "no annotation":
        mask[:], message = 0, "no annotated pixel (every mask is 0 / ignore)"
    if not (root / image_name).exists() and case != "missing file":
        np.save(root / image_name, cube)
    Image.fromarray(mask).save(root / mask_name)
    manifest = root / "data.yaml"
    entries = [{"image": image_name, "mask": mask_name}]
    manifest.write_text(yaml.safe_dump({"classes": list(CLASSES), "images": entries}))
    return manifest, message


BAD = (
    "missing file",
    "corrupt file",
    "truncated file",
    "shape mismatch",
    "value outside classes",
    "NaN in cube",
    "class without annotation",
    "no annotation",
)


@pytest.mark.parametrize("case", BAD)
def test_bad_data_is_refused_with_the_file_named_and_nothing_written(crops, tmp_path, case):
    manifest, message = _bad_case(case, crops, tmp_path)
    out = tmp_path / "model"
    result = CliRunner().invoke(
        app,
        ["train", "--data", str(manifest), "--out", str(out), "--epochs", "1", "--device", "cpu"],
    )
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model")]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--tpr", "1.5"], "strictly between 0 and 1"),
        (["--detector", "odinn"], "unknown detector 'odinn'"),
        (["--epochs", "0"], "epochs must be at least 1"),
        (["--ensemble", "0"], "ensemble must be at least 1"),
        (["--precision", "16"], "unknown precision '16'"),
        (["--patch", "30"], "patch side must be a multiple of 16"),
        (["--threshold", "otsu"], "unknown threshold rule 'otsu'"),
        (["--detector", "pu"], "the pu detector needs --unlabelled nnpu"),
    ],
)
def test_bad_options_are_refused_before_reading_or_training(dataset, tmp_path, args, message):
    out = tmp_path / "model"
    result = CliRunner().invoke(
        app, ["train", "--data", str(dataset), "--out", str(out), "--device", "cpu", *args]
    )
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not out.exists() and not (tmp_path / ".model.checkpoints").exists()


def test_nan_policy_zero_fills_and_trains(crops, tmp_path):
    manifest, _ = _bad_case("NaN in cube", crops, tmp_path)
    data = load_manifest(manifest)
    from oodseg.manifest import with_nan_policy

    (sample,) = read_all(with_nan_policy(data, "zero"))
    assert sample.image[3, 4, 5] == 0 and np.isfinite(sample.image).all()


def test_bundle_refuses_other_band_counts_and_newer_versions(bundle_dir, crops, tmp_path):
    bundle, out = bundle_dir
    with pytest.raises(
        ValueError, match=r"expected \(H, W, 200\) for this model, got shape \(48, 48, 3\)"
    ):
        bundle.predict(crops[0][0][..., :3])
    newer = tmp_path / "newer"
    newer.mkdir()
    for p in out.iterdir():
        newer.joinpath(p.name).write_bytes(p.read_bytes())
    meta = json.loads((newer / "bundle.json").read_text())
    meta["format_version"] = 99
    (newer / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="bundle format 99 is newer than this oodseg reads"):
        load_bundle(newer)
    truncated = newer / "model.safetensors"
    truncated.write_bytes((out / "model.safetensors").read_bytes()[:1000])
    meta["format_version"] = 1
    (newer / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="model.safetensors: corrupt or truncated weights"):
        load_bundle(newer)


def test_suggest_on_the_whole_scene_never_points_at_strokes_and_its_viewer_works(
    bundle_dir, indian_pines, tmp_path
):
    """The crops' model on the whole 145 x 145 x 200 scene: ranked regions away from the strokes,
    the same from the CLI as from the API, and the scene's viewer page in a headless browser."""
    from oodseg.viewer import Layer

    bundle, model = bundle_dir
    cube = indian_pines.cube.astype(np.float32)
    labels = np.zeros(cube.shape[:2], np.int64)
    for k, name in enumerate(CLASSES, start=1):
        labels[indian_pines.labels == indian_pines.class_id(name)] = k
    strokes = simulate_annotations(labels, budget=0.02, seed=0).labels.astype(np.uint8)
    for d in ("images", "masks"):
        (tmp_path / d).mkdir()
    np.save(tmp_path / "images" / "scene.npy", cube)
    Image.fromarray(strokes).save(tmp_path / "masks" / "scene.png")
    out = tmp_path / "suggested"
    args = ["suggest", "--model", str(model), "--input", str(tmp_path / "images"), "--out"]
    result = CliRunner().invoke(
        app, [*args, str(out), "--masks", str(tmp_path / "masks"), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    found = json.loads((out / "suggestions.json").read_text())
    regions, maps = bundle.suggest(cube, annotated=strokes > 0, name="scene")
    assert found == [json.loads(json.dumps(r.__dict__)) for r in regions] and len(found) == 10
    assert [r["rank"] for r in found] == list(range(1, 11))
    assert all(strokes[r["anchor"][0], r["anchor"][1]] == 0 for r in found)
    assert {r["reason"] for r in found} <= {"class", "threshold"}
    assert (out / "suggestions.csv").read_text().count("\n") == 11
    assert {p.name for p in out.iterdir()} == {
        "suggestions.json", "suggestions.csv", "scene_suggestions.png", "scene_viewer.html"
    }  # fmt: skip
    layer = Layer("model", maps.classes, maps.scores, bundle.threshold)
    check_viewer(out / "scene_viewer.html", layer, (145, 145), 3_500_000)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--top", "0"], "--top and --min-area must be at least 1"),
        (["--masks", "MISSING"], "folder not found"),
        (["--masks", "OTHER"], "no mask for"),
        (["--masks", "SMALL"], "does not match the image"),
    ],
)
def test_suggest_refuses_bad_input_and_writes_nothing(bundle_dir, crops, tmp_path, extra, message):
    _, model = bundle_dir
    (tmp_path / "images").mkdir()
    np.save(tmp_path / "images" / "a.npy", crops[0][0])
    for name, side in (("OTHER", 48), ("SMALL", 20)):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((side, side), np.uint8)).save(
            tmp_path / name / ("b.png" if name == "OTHER" else "a.png")
        )
    extra = [str(tmp_path / e) if e.isupper() else e for e in extra]
    out = tmp_path / "out"
    args = ["suggest", "--model", str(model), "--input", str(tmp_path / "images"), "--out"]
    result = CliRunner().invoke(app, [*args, str(out), "--device", "cpu", *extra])
    assert result.exit_code == 2 and message in " ".join(result.output.split())
    assert not out.exists() and not list(tmp_path.glob(".out*"))


@pytest.fixture(scope="module")
def evaluation_set(crops, tmp_path_factory):
    """The three crops with their dense masks; the other classes' pixels are OOD truth."""
    root = tmp_path_factory.mktemp("eval")
    entries = []
    for i, (cube, dense, _) in enumerate(crops):
        np.save(root / f"e{i}.npy", cube)
        Image.fromarray(dense.astype(np.uint8)).save(root / f"e{i}.png")
        entries.append({"image": f"e{i}.npy", "mask": f"e{i}.png"})
    manifest = root / "eval.yaml"
    spec = {"classes": list(CLASSES), "ood": [OTHER], "images": entries}
    manifest.write_text(yaml.safe_dump(spec))
    return manifest


def test_evaluation_matches_scikit_learn_on_the_same_predictions(bundle_dir, crops, evaluation_set):
    from sklearn.metrics import roc_auc_score

    from oodseg.evaluate import evaluate

    bundle, _ = bundle_dir
    result = evaluate(bundle, load_manifest(evaluation_set)).results
    scores, truth = [], []
    for cube, dense, _ in crops:
        _, s = bundle.predict(cube)
        scored = dense > 0
        scores.append(s[scored])
        truth.append(dense[scored] != OTHER)  # ID positive
    scores, truth = np.concatenate(scores), np.concatenate(truth)
    pooled = result["pooled"]
    assert pooled["n_id"] == truth.sum() and pooled["n_ood"] == (~truth).sum() > 100
    assert pooled["auroc"] == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)
    assert pooled["id_kept"] == pytest.approx((scores[truth] >= bundle.threshold).mean())
    assert len(result["per_image"]) == len(crops)


def test_cli_evaluate_then_html_report_in_a_headless_browser(bundle_dir, evaluation_set, tmp_path):
    _, model = bundle_dir
    out = tmp_path / "eval"
    runner = CliRunner()
    args = ["evaluate", "--model", str(model), "--data", str(evaluation_set), "--out", str(out)]
    result = runner.invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert {"results.json", "results.md", "results.csv", "roc.png", "images.png"} <= {
        p.name for p in out.iterdir()
    }
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "<table>" in html
    pages = sorted((out / "viewer").glob("*.html"))
    assert len(pages) == 4 and all(f'href="viewer/{p.name}"' in html for p in pages)
    # Count, inside the browser, the tables and the images that really decoded.
    probe = tmp_path / "probe.html"
    probe.write_text(
        html.replace(
            "</body>",
            "<script>window.onload=()=>{document.body.dataset.tables="
            "document.querySelectorAll('table').length;document.body.dataset.images="
            "[...document.images].filter(i=>i.complete&&i.naturalWidth>0).length;}</script></body>",
        )
    )
    dom, _ = headless_dom(probe.as_uri())
    assert 'data-tables="1"' in dom and 'data-images="3"' in dom


@pytest.mark.slow
def test_training_killed_mid_run_resumes_to_the_same_bundle(dataset, tmp_path):
    """Kill -9 a training process after its first checkpoint, resume, and compare with an
    uninterrupted run: same weights, same threshold."""
    import signal
    import time

    from safetensors.torch import load_file

    def command(out, *extra):
        return train_command(dataset, out, "--epochs", "30", "--patches-per-epoch", "32", *extra)

    whole = tmp_path / "whole"
    subprocess.run(command(whole), check=True, capture_output=True)
    cut = tmp_path / "cut"
    proc = subprocess.Popen(command(cut), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / ".cut.checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not ckpt.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.is_file() and not cut.exists()  # killed before the end: no bundle, a checkpoint
    subprocess.run(command(cut, "--resume"), check=True, capture_output=True)
    a, b = load_file(whole / "model.safetensors"), load_file(cut / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    meta_a = json.loads((whole / "bundle.json").read_text())
    meta_b = json.loads((cut / "bundle.json").read_text())
    assert meta_a["threshold"] == meta_b["threshold"]
    assert not (tmp_path / ".cut.checkpoints").exists()  # cleaned up once the bundle is saved


@pytest.mark.slow
def test_ddp_training_with_two_processes_reduces_the_detector_exactly(dataset, tmp_path):
    """Two CPU processes (gloo): each scores half of the images; the gathered statistics must be
    what one process computes with the trained network, to float32 rounding (the processes run
    the network with fewer threads each, which reorders the convolutions' sums)."""
    out = tmp_path / "ddp"
    command = train_command(
        dataset,
        out,
        "--epochs",
        "2",
        "--patches-per-epoch",
        "16",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--detector",
        "mahalanobis",
        "--threshold",
        "tpr",
    )
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    bundle = load_bundle(out)
    data = load_manifest(dataset)
    train_samples, val_samples = read_all(data, "train"), read_all(data, "val")
    assert len(train_samples) == 8  # four per process
    parts, labels = [], []
    for s in train_samples:
        forward = Predictor(bundle.net, bundle.normaliser, bundle.preset).forward(s.image)
        parts.append(forward.pixels(bundle.net.head, s.mask > 0))
        labels.append(torch.from_numpy(s.mask[s.mask > 0] - 1))
    single = make_detector("mahalanobis").fit(PixelOutputs.concat(parts), torch.cat(labels))
    torch.testing.assert_close(bundle.detector.means_, single.means_, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(bundle.detector.precision_, single.precision_, rtol=1e-4, atol=1e-6)
    _, scores = bundle.predict(val_samples[0].image)
    from oodseg.threshold import calibrate_threshold

    expected = calibrate_threshold(scores[val_samples[0].mask > 0], 0.95)
    assert bundle.threshold == pytest.approx(expected, rel=1e-5)


def test_bf16_and_channels_last_prediction_agree_with_float32(bundle_dir, crops):
    bundle, _ = bundle_dir
    labels, scores = bundle.predict(crops[1][0])
    fast_labels, fast_scores = bundle.predict(
        crops[1][0], precision="bf16-mixed", channels_last=True
    )
    assert fast_scores.dtype == np.float32
    assert (fast_labels == labels).mean() > 0.9
    assert np.corrcoef(fast_scores.ravel(), scores.ravel())[0, 1] > 0.99
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        bundle.predict(crops[1][0], precision="fp8")


ENDOSCAPES_FRAMES = ["100_27925", "100_28675"]
TINY = TrainConfig(preset="small", epochs=1, patches_per_epoch=8, batch_size=4, device="cpu")


def endoscapes_frames(shared_data, folder, *, background: bool = False):
    """Two Endoscapes frames as a user's folders (never copied into the project): JPEG images,
    PNG sparse masks of strokes drawn from the dense masks, matched by stem; ``background``: the
    annotators stroked the background too, under a declared value."""
    root = shared_data / "endoscapes_seg50"
    if not root.is_dir():
        pytest.skip(f"{root} is absent: Endoscapes-Seg50 is not beside this checkout")
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    dense = [np.asarray(Image.open(root / "semseg" / f"{n}.png")) for n in ENDOSCAPES_FRAMES]
    present = sorted(set(np.unique(dense[0])) & set(np.unique(dense[1])) - {0, 255})
    declared = len(present) + 1
    for n, mask in zip(ENDOSCAPES_FRAMES, dense, strict=True):
        (folder / "images" / f"{n}.jpg").write_bytes((root / "train_seg" / f"{n}.jpg").read_bytes())
        classes = np.zeros_like(mask)
        for k, c in enumerate(present, start=1):
            classes[mask == c] = k
        if background:
            classes[mask == 0] = declared
        strokes = simulate_annotations(classes.astype(np.int64), budget=0.02, stroke_length=40)
        Image.fromarray(strokes.labels.astype(np.uint8)).save(folder / "masks" / f"{n}.png")
    label_map = dict(
        line.rsplit(" ", 1)[::-1]
        for line in (root / "seg_label_map.txt").read_text().split("\n")
        if line
    )
    names = tuple(label_map[str(c)] for c in present)
    return from_folders(
        folder / "images", folder / "masks", names, background=(declared,) if background else ()
    )


def test_two_endoscapes_frames_train_save_reload_and_predict_bit_identical(shared_data, tmp_path):
    """RGB frames with no declared background: the paper's training and GEN by default."""
    data = endoscapes_frames(shared_data, tmp_path)
    names = ENDOSCAPES_FRAMES
    torch.manual_seed(0)
    bundle = train(data, config=TINY)
    assert bundle.info["train"]["unlabelled"] == "ignore" and bundle.detector.name == "gen"
    bundle.save(tmp_path / "model")
    frame = tmp_path / "images" / f"{names[0]}.jpg"
    labels, scores = bundle.predict(read_image(frame))
    assert labels.shape == (480, 854) and bundle.bands == 3
    again = predict_in_new_process(tmp_path / "model", frame, tmp_path)
    np.testing.assert_array_equal(again[0], labels)
    np.testing.assert_array_equal(again[1], scores)
    # The frame's viewer page, from oodseg suggest on the frames and their strokes.
    from oodseg.viewer import Layer

    out = tmp_path / "suggested"
    args = ["suggest", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "images")]
    result = CliRunner().invoke(
        app, [*args, "--out", str(out), "--masks", str(tmp_path / "masks"), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    maps = bundle.maps(read_image(frame))
    np.testing.assert_array_equal(maps.labels, labels)
    layer = Layer("model", maps.classes, maps.scores, bundle.threshold)
    check_viewer(out / f"{names[0]}_viewer.html", layer, (480, 854), 1_500_000)


def test_frames_with_declared_background_train_the_pu_head_by_default(shared_data, tmp_path):
    """RGB images whose data declare background: --unlabelled auto trains the nnPU head, and the
    bundle's detector is its logit (pu), saved and reloaded with it."""
    data = endoscapes_frames(shared_data, tmp_path, background=True)
    torch.manual_seed(0)
    bundle = train(data, config=TINY)
    assert bundle.info["train"]["unlabelled"] == "nnpu" and bundle.detector.name == "pu"
    frame = read_image(tmp_path / "images" / f"{ENDOSCAPES_FRAMES[0]}.jpg")
    labels, scores = bundle.predict(frame)
    again = load_bundle(bundle.save(tmp_path / "model"))
    assert again.net.known_head is not None and again.detector.name == "pu"
    np.testing.assert_array_equal(again.predict(frame)[1], scores)
    assert np.isfinite(scores).all() and labels.shape == (480, 854)


def test_every_option_that_shapes_prediction_travels_with_the_bundle(dataset, crops, tmp_path):
    """A known-vs-unknown head (nnPU), the PU threshold rule, score and class smoothing, a
    spectral PCA input and an ensemble of two networks: saved, reloaded and predicting the same
    maps, from the bundle alone."""
    config = TrainConfig(
        epochs=2,
        patches_per_epoch=8,
        batch_size=4,
        device="cpu",
        unlabelled="nnpu",
        input_pca=16,
        ensemble=2,
    )
    scoring = ScoringConfig(threshold="pu", smooth=1.5, smooth_classes=3.0)
    bundle = train(load_manifest(dataset), detector="pu", config=config, scoring=scoring)
    assert isinstance(bundle.net, Ensemble) and len(bundle.net.members) == 2
    assert bundle.net.known_head is not None and bundle.normaliser.channels == 16
    assert bundle.threshold_rule == "pu" and 0 < bundle.id_share < 1
    out = bundle.save(tmp_path / "model")
    again = load_bundle(out)
    assert (again.smooth, again.smooth_classes) == (1.5, 3.0)
    assert again.threshold_rule == "pu" and len(again.net.members) == 2
    np.testing.assert_array_equal(again.normaliser.projection, bundle.normaliser.projection)
    cube = crops[1][0]
    labels, scores = bundle.predict(cube)
    labels2, scores2 = again.predict(cube)
    np.testing.assert_array_equal(labels, labels2)
    np.testing.assert_array_equal(scores, scores2)
    # The stored class smoothing is the one applied: without it the classes are the raw arg-max.
    raw, scores3 = replace(again, smooth_classes=0.0).predict(cube)
    np.testing.assert_array_equal(scores3, scores)
    assert 0 < ((raw != labels) & (labels > 0)).mean() < 0.5
    # The PU rule flags the estimated OOD share of the calibration image's unlabelled pixels.
    cal_cube, _, strokes = crops[2]
    _, cal_scores = bundle.predict(cal_cube)
    flagged = (cal_scores[strokes == 0] < bundle.threshold).mean()
    assert flagged == pytest.approx(1 - bundle.id_share, abs=0.02)
