"""A collection fuzzer: small collections with the defects users' data carry, written to disk and
run through the checking pass (and, for a seeded few, a short cross-validation). Every case either
runs or is refused with a message naming the file at fault (or the manifest, for what concerns the
whole data set) — never another exception, never a file left behind.

``HYPOTHESIS_PROFILE=ci`` (CI) tries many more collections than the default profile.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from oodseg.cli import app
from oodseg.config import TrainConfig
from oodseg.crossval import CrossvalConfig, prepare
from oodseg.manifest import load_manifest

QUIET = {
    "deadline": None,
    "derandomize": True,  # the same collections on every run
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}
settings.register_profile("default", max_examples=30, **QUIET)
settings.register_profile("ci", max_examples=300, **QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

CLASSES = ("alpha", "beta")
NAMES = ("scan", "scän", "画像", "a b")  # ASCII, accented, non-Latin, a space


HARMFUL = ("nan", "inf", "empty", "off-by-one", "bad-value", "no-mask")  # a run must refuse
# A run must go through. "grey": a grey-scale PNG / JPEG among colour ones (read as three bands).
HARMLESS = ("none", "constant", "symlink", "grey")


@st.composite
def images(
    draw: st.DrawFn, index: int, defects: tuple[str, ...] = HARMLESS * 3 + HARMFUL, split=None
) -> dict:
    """One image and its mask, with one of ``defects`` (those users' files have)."""
    kind = draw(st.sampled_from(["tiny", "tall", "normal", "normal", "normal"]))
    if kind == "tiny":  # smaller than a training patch
        h, w = draw(st.integers(3, 8)), draw(st.integers(3, 8))
    elif kind == "tall":  # a huge aspect ratio
        h, w = draw(st.integers(2, 6)), draw(st.integers(40, 90))
    else:
        h, w = draw(st.integers(16, 48)), draw(st.integers(16, 48))
    return {
        # Without its index a name may repeat: the same file name in two folders.
        "name": draw(st.sampled_from(NAMES)) + draw(st.sampled_from(["", str(index)])),
        "folder": draw(st.sampled_from(["a", "b"])),  # the same stem may sit in two folders
        "shape": (h, w),
        "format": draw(st.sampled_from(["npy", "png", "rgba", "jpg"])),
        "defect": draw(st.sampled_from(defects)),
        "classes": draw(st.sampled_from([(1, 2), (1,), (2,), (1, 2)])) if split is None else (1, 2),
        "split": draw(st.sampled_from([None, None, None, "train", "val", "test"]))
        if split is None
        else split,
        "seed": draw(st.integers(0, 2**16)),
    }


collections = st.integers(1, 5).flatmap(lambda n: st.tuples(*(images(i) for i in range(n))))
# Collections a run must go through: one image per split, both classes in each, harmless quirks.
runnable = st.tuples(
    *(images(i, HARMLESS, split) for i, split in enumerate(("train", "val", "test")))
)


def write(root: Path, specs: tuple[dict, ...]) -> tuple[Path, list[str]]:
    """The collection on disk, its manifest, and every path a message may name."""
    entries, paths = [], []
    colour = {i for i, spec in enumerate(specs) if spec["format"] != "npy"}
    for i, spec in enumerate(specs):
        rng = np.random.default_rng(spec["seed"])
        h, w = spec["shape"]
        folder = root / spec["folder"]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.uniform(0, 255, (h, w, 3))
        if spec["defect"] == "constant":
            pixels[:] = 17
        name = spec["name"]
        if spec["format"] == "npy":
            image = folder / f"{name}.npy"
            array = pixels.astype(np.float32)
            if spec["defect"] in ("nan", "inf"):
                array[0, 0, 0] = np.nan if spec["defect"] == "nan" else np.inf
            np.save(image, array)
        else:
            suffix = "jpg" if spec["format"] == "jpg" else "png"
            image = folder / f"{name}.{suffix}"
            rgb = pixels.astype(np.uint8)
            if spec["format"] == "rgba":
                rgb = np.dstack([rgb, np.full((h, w), 200, np.uint8)])
            if spec["defect"] == "grey" and colour - {i}:
                rgb = rgb[..., 0]
            Image.fromarray(rgb).save(image)
        if spec["defect"] == "symlink":
            link = folder / f"link-{image.name}"
            if not link.is_symlink():  # two entries may name the same file
                link.symlink_to(image.name)
            image = link
        entry = {"image": str(image.relative_to(root))}
        paths.append(str(image))
        if spec["defect"] != "no-mask":
            mh, mw = (h, w + 1) if spec["defect"] == "off-by-one" else (h, w)
            mask = np.zeros((mh, mw), np.uint8)
            if spec["defect"] != "empty":
                for k, c in enumerate(spec["classes"]):
                    mask[k * mh // 2 : (k + 1) * mh // 2 or mh] = c  # a band of each class
            if spec["defect"] == "bad-value":
                mask[0, 0] = 9
            mask_path = folder / f"{name}_mask.png"
            Image.fromarray(mask).save(mask_path)
            entry["mask"] = str(mask_path.relative_to(root))
            paths.append(str(mask_path))
        if spec["split"] is not None:
            entry["split"] = spec["split"]
        entries.append(entry)
    manifest = root / "data.yaml"
    manifest.write_text(yaml.safe_dump({"classes": list(CLASSES), "images": entries}))
    return manifest, [str(manifest), *paths]


def refused_naming_a_file(error: Exception, paths: list[str]) -> bool:
    return any(p in str(error) for p in paths)


def spec(name: str, fmt: str, defect: str = "none") -> dict:
    return dict(
        name=name,
        folder="a",
        shape=(3, 3),
        format=fmt,
        defect=defect,
        classes=(1, 2),
        split=None,
        seed=0,
    )


@given(specs=collections)
# grey photos with a three-band array: the array's file is named, not its stem
@example(specs=(spec("scan", "png", "grey"), spec("scan1", "npy"), spec("scan2", "png", "grey")))
def test_the_checking_pass_runs_or_refuses_naming_the_file(tmp_path_factory, specs):
    root = tmp_path_factory.mktemp("collection")
    manifest, paths = write(root, specs)
    before = sorted(root.rglob("*"))
    try:
        data = load_manifest(manifest)
        plan = prepare(CrossvalConfig(dataset="data"), data, source=str(manifest))
    except (ValueError, FileNotFoundError) as error:
        event(f"refused: {str(error).split(': ', 1)[-1][:40]}")
        assert refused_naming_a_file(error, paths), f"no file named in: {error}"
    else:
        event("accepted")
        assert plan.jobs  # a run that passes the checks has something to run
    assert sorted(root.rglob("*")) == before  # checking writes nothing


@settings(max_examples=6)
@given(specs=st.one_of(runnable, runnable, collections))
def test_a_short_run_gives_finite_results_or_exits_2_naming_the_file(tmp_path_factory, specs):
    root = tmp_path_factory.mktemp("collection")
    manifest, paths = write(root, specs)
    out = root / "out"
    quick = TrainConfig(preset="small", epochs=1, patches_per_epoch=2, batch_size=2, patch=16)
    result = CliRunner().invoke(
        app,
        ["crossval", "--data", str(manifest), "--out", str(out), "--no-baselines"]
        + ["--detectors", "gen", "--device", "cpu"]
        + [
            f"--{k.replace('_', '-')}={getattr(quick, k)}"
            for k in ("preset", "epochs", "batch_size", "patch")
        ]
        + ["--patches-per-epoch", str(quick.patches_per_epoch)],
    )
    event(f"exit {result.exit_code}")
    if result.exit_code == 0:
        res = json.loads((out / "results.json").read_text())
        aurocs = [r["auroc"] for p in res["protocols"].values() for r in p["folds"]]
        assert aurocs and np.all(np.isfinite(aurocs))
    else:
        assert result.exit_code == 2, result.output
        shown = "".join(result.output.split())  # the console wraps long paths
        assert any("".join(p.split()) in shown for p in paths), result.output
        assert not out.exists() and not (root / ".out.partial").exists()
    shutil.rmtree(root)
