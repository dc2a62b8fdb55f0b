"""Cross-validation on any labelled data set: medical data have no OOD ground truth, so hold a
labelled class out (``loco``), or score the declared background as OOD (``background``).

:func:`prepare` turns a :class:`CrossvalConfig` into a collection and its folds, checking every
option and reading every file before any training; :func:`crossval` runs the folds through the fold
engine (:mod:`oodseg.engine`), writing each fold's results as it finishes, so that an interrupted run
resumes where it stopped and fold jobs run apart merge into one run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from oodseg.datasets import DATASETS, FRAME_DATASETS, load_dataset
from oodseg.detectors import DETECTORS
from oodseg.engine import BACKGROUND, Collection, Fold, collect, run_fold
from oodseg.manifest import ImageDataset
from oodseg.model import PRESETS
from oodseg.results import assemble
from oodseg.runtime import machine, package_versions, torch_device
from oodseg.sources import (
    PROTOCOLS,
    SCENE_BUDGET,
    available_protocols,
    dataset_collection,
    endoscapes_collection,
    folds,
    scene_collection,
)
from oodseg.threshold import DEFAULT_RULE, RULES
from oodseg.training import TrainConfig

# GEN first: the detector the report's panels show. Over both protocols and both feature choices on
# Indian Pines it had the best mean AUROC, at 0.4x the forward pass and with nothing to fit. A
# network trained with the PU head (--unlabelled auto on RGB data that declare background) puts
# pu before them: on Endoscapes it ranked the background best (0.866 against GEN's 0.699).
DEFAULT_DETECTORS = (
    "gen",
    "msp",
    "maxlogit",
    "energy",
    "entropy",
    "odin",
    "mahalanobis",
    "relative_mahalanobis",
    "knn",
    "vim",
)


@dataclass(frozen=True)
class CrossvalConfig:
    """Everything that defines a cross-validation run (stored in ``results.json``). Options that
    apply to one kind of data set only are None by default, and refused on the other kind: a
    single scene takes ``split`` and ``margin``, a frame set ``scale`` (and Endoscapes
    ``max_frames``)."""

    dataset: str = "indian_pines"  # a built-in scene, "endoscapes" (with data_root), or "data"
    data_root: str | None = None
    protocols: tuple[str, ...] | None = None  # default: every protocol the data set allows
    detectors: tuple[str, ...] | None = None  # None: the defaults (pu first with a PU head)
    classes: tuple[str, ...] | None = None  # classes held out in loco (default: all)
    tpr: float = 0.95
    threshold: str = DEFAULT_RULE  # the rule of the K+1 map's threshold (every rule is reported)
    annotation: str = "strokes"
    budget: float | None = None
    split: str | None = None  # single scene: "scene" (default) or "blocks"
    margin: int | None = None  # single scene, scene split: pixels around strokes not tested
    calibration: str | None = None  # single scene, scene split: "strokes" (default) or "region"
    scale: float | None = None  # frame sets: resize factor (Endoscapes default 0.5)
    max_frames: int | None = None  # Endoscapes: frames per split, evenly spread
    baselines: bool = True
    train: TrainConfig = field(default_factory=TrainConfig)
    fold: int | None = None  # run only this job (1-based): one job of a cluster array

    def __post_init__(self) -> None:
        if self.fold is not None and self.fold < 1:
            raise ValueError(f"--fold counts from 1, got {self.fold}")
        if not 0 < self.tpr < 1:
            raise ValueError(f"target TPR must be strictly between 0 and 1, got {self.tpr}")
        if self.threshold not in RULES:
            raise ValueError(
                f"unknown threshold rule {self.threshold!r}; choose one of: {', '.join(RULES)}"
            )
        if self.split is not None and self.split not in SCENE_BUDGET:
            raise ValueError(f"unknown split {self.split!r}; choose scene or blocks")
        if self.annotation not in ("strokes", "points"):
            raise ValueError(
                f"unknown annotation mode {self.annotation!r}; choose strokes or points"
            )
        if self.budget is not None and not 0 < self.budget <= 1:
            raise ValueError(f"annotation budget must be in (0, 1], got {self.budget}")
        if self.calibration not in (None, "strokes", "region"):
            raise ValueError(
                f"unknown calibration hold-out {self.calibration!r}; choose strokes or region"
            )
        if self.margin is not None and self.margin < 0:
            raise ValueError(f"--margin must be 0 or more, got {self.margin}")
        if self.scale is not None and not 0 < self.scale <= 1:
            raise ValueError(f"frame scale must be in (0, 1], got {self.scale}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"--max-frames must be at least 1, got {self.max_frames}")
        unknown = [p for p in self.protocols or () if p not in PROTOCOLS]
        if unknown or self.protocols == ():
            raise ValueError(
                f"unknown protocol {', '.join(unknown) or '(none)'}; choose from: "
                + ", ".join(PROTOCOLS)
            )
        unknown = [d for d in self.detectors or () if d not in DETECTORS]
        if unknown or self.detectors == ():
            raise ValueError(
                f"unknown detector {', '.join(unknown) or '(none)'}; choose from: {', '.join(DETECTORS)}"
            )
        pu = "pu" in (self.detectors or ())
        if pu and self.train.unlabelled != "auto" and not self.train.known_head:
            raise ValueError(
                "the pu detector reads the known-vs-unknown head: train with --unlabelled nnpu "
                "(or nnpu-head), or leave pu out of --detectors"
            )
        known = (*DATASETS, *FRAME_DATASETS, "data")
        if self.dataset not in known:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of: {', '.join(known)}")


@dataclass
class Plan:
    """A checked run: the collection, its jobs (the folds), the folds skipped (with why) and
    whether each fold also trains its fully supervised baseline."""

    collection: Collection
    jobs: list[Fold]
    skipped: list[dict]
    baseline: bool
    header: dict
    config: CrossvalConfig  # as run: the defaults that depend on the data made concrete


def prepare(
    config: CrossvalConfig,
    data: ImageDataset | None = None,
    *,
    source: str = "data",
    console: Console | None = None,
) -> Plan:
    """Check every option against the data set and read it once (normalisation, class counts),
    before any training: a bad option or file fails here, in seconds."""
    scene = config.dataset in DATASETS and data is None
    single = scene or (data is not None and len(data.items) == 1)
    what = "a single scene" if single else "a frame set"
    endoscapes = config.dataset in FRAME_DATASETS and data is None
    refused = {
        "split": (config.split, not single, what),
        "margin": (config.margin, not single, what),
        "calibration": (
            config.calibration,
            not single or config.split == "blocks",
            what if not single else "the blocks split",
        ),
        "scale": (config.scale, single, what),
        "max_frames": (config.max_frames, not endoscapes, "this data set (Endoscapes only)"),
    }
    for option, (value, wrong, kind) in refused.items():
        if value is not None and wrong:
            raise ValueError(f"--{option.replace('_', '-')} does not apply to {kind}")
    if config.dataset in FRAME_DATASETS and config.data_root is None:
        raise ValueError(f"--dataset {config.dataset} needs --data-root (its folder)")
    if config.data_root is not None and config.dataset not in FRAME_DATASETS:
        raise ValueError("--data-root applies to --dataset endoscapes only")
    common = {"annotation": config.annotation, "budget": config.budget, "seed": config.train.seed}
    if data is not None:
        collection = dataset_collection(
            data,
            source=source,
            split=config.split or "scene",
            margin=1 if config.margin is None else config.margin,
            held_out=config.calibration or "strokes",
            scale=config.scale or 1.0,
            **common,
        )
    elif scene:
        collection = scene_collection(
            load_dataset(config.dataset),
            config.split or "scene",
            margin=1 if config.margin is None else config.margin,
            held_out=config.calibration or "strokes",
            **common,
        )
    else:
        collection = endoscapes_collection(
            config.data_root,
            scale=0.5 if config.scale is None else config.scale,
            max_frames=config.max_frames,
            **common,
        )
    with Progress(console=console, transient=True) as progress:
        collect(collection, progress, input_pca=config.train.input_pca)
    if data is not None:
        _check_declared(collection, data, source)
    allowed = available_protocols(collection)
    protocols = config.protocols or allowed
    for p in protocols:
        if p not in allowed:
            raise ValueError(
                f"the {p} protocol needs background pixels in the test truth; {collection.name} "
                "declares none (a manifest's 'background' / 'ood' values)"
            )
    config = _for_data(config, collection)
    jobs, skipped = folds(collection, [p for p in PROTOCOLS if p in protocols], config.classes)
    if not jobs:
        raise ValueError(
            "no fold can be run: " + "; ".join(f"{s['held_out']}: {s['reason']}" for s in skipped)
        )
    if config.fold is not None and config.fold > len(jobs):
        raise ValueError(f"--fold {config.fold}: this run has {len(jobs)} folds")
    baseline = config.baselines and bool(collection.ids("dense"))
    device = torch_device(config.train.device)
    header = {
        "dataset": collection.name,
        "credit": collection.credit,
        "description": collection.description,
        "images": collection.size,
        "annotated_pixels": {
            "train": int(collection.counts["train"][1:BACKGROUND].sum()),
            "calibration": int(collection.counts["calibration"][1:BACKGROUND].sum()),
            "test": int(collection.counts["truth"][1:].sum()),
        },
        "config": _config_dict(config),
        "versions": package_versions(),
        "machine": machine(device),
    }
    if data is not None and data.palette:
        header["colour_masks"] = data.colour_summary()
    return Plan(collection, jobs, skipped, baseline, header, config)


def _for_data(config: CrossvalConfig, collection: Collection) -> CrossvalConfig:
    """``config`` with what depends on the data set made concrete: the use of the unlabelled
    pixels (:meth:`TrainConfig.resolved`) and, unless given, the detectors."""
    train = config.train.resolved(collection.declares_background, collection.bands)
    detectors = config.detectors or (("pu",) if train.known_head else ()) + DEFAULT_DETECTORS
    if "pu" in detectors and not train.known_head:
        raise ValueError(
            "the pu detector reads the known-vs-unknown head, which --unlabelled auto trains only "
            "on RGB images whose data declare background: give --unlabelled nnpu, or leave pu "
            "out of --detectors"
        )
    return replace(config, train=train, detectors=detectors)


def _check_declared(collection: Collection, data: ImageDataset, source: str) -> None:
    """Every declared class and background value occurs somewhere in the masks."""
    seen = sum(collection.counts.values())
    absent = [n for i, n in enumerate(data.class_names, 1) if not seen[i]]
    if absent:
        raise ValueError(f"{source}: no pixel of class {', '.join(absent)} in any mask")
    if data.ood and not seen[BACKGROUND]:
        raise ValueError(
            f"{source}: the declared background / ood values {list(data.ood)} occur in no mask"
        )


def _config_dict(config: CrossvalConfig) -> dict:
    """The configuration as ``results.json`` stores it (JSON types: lists, not tuples)."""
    d = asdict(config)
    d["network"] = PRESETS[config.train.preset].description
    return json.loads(json.dumps(d))


def crossval(
    config: CrossvalConfig,
    out: Path,
    *,
    data: ImageDataset | None = None,
    source: str = "data",
    console: Console | None = None,
    plan: Plan | None = None,
) -> dict:
    """Run the folds (each with its fully supervised baseline) into the folder ``out``: each fold's
    results and panels are written as it finishes, fold files already there (an interrupted run
    of the same configuration) are kept and not rerun. Returns ``results.json``'s content."""
    from oodseg.report import load_fold_files, write_fold, write_run

    console = console or Console()
    start = time.perf_counter()
    plan = plan or prepare(config, data, source=source, console=console)
    out.mkdir(parents=True, exist_ok=True)
    setup = out / "run.json"
    if setup.is_file():
        earlier = json.loads(setup.read_text())
        if not _same(earlier["config"], plan.header["config"]):
            raise ValueError(
                f"{out}: holds an interrupted run of another configuration; run without --resume "
                "to start afresh, or choose another --out"
            )
    setup.write_text(json.dumps(plan.header, indent=2))
    config = plan.config
    jobs = list(enumerate(plan.jobs))
    if config.fold is not None:
        jobs = [jobs[config.fold - 1]]
    done = {f["order"] for f in load_fold_files(out)}
    c = plan.collection
    with Progress(console=console, transient=True) as progress:
        for n, (order, fold) in enumerate(jobs):
            what = f"{fold.protocol}: OOD = {fold.name}"
            if order in done:
                console.print(f"[dim]{n + 1}/{len(jobs)} {what}: done earlier, kept[/]")
                continue
            extra = ", then the fully supervised baseline" if plan.baseline else ""
            console.rule(f"{n + 1}/{len(jobs)} {what} ({fold.k} known classes{extra})")
            t = time.perf_counter()
            result = run_fold(
                c,
                fold,
                config.train,
                config.detectors,
                config.tpr,
                rule=config.threshold,
                baseline=plan.baseline,
                progress=progress,
            )
            write_fold(out, order, result, collection=c, seconds=time.perf_counter() - t)
    fold_files = load_fold_files(out)
    # Wall time of this run, plus the time of the folds an interrupted run had finished.
    kept = sum(f["seconds"] for f in fold_files if f["order"] in done)
    header = {**plan.header, "seconds": round(time.perf_counter() - start + kept, 1)}
    skipped = plan.skipped if config.fold in (None, 1) else []
    results = assemble(header, fold_files, skipped)
    write_run(out, results)
    return results


def _same(a: dict, b: dict) -> bool:
    """Whether two runs' configurations agree (apart from which fold job they ran)."""
    return {**a, "fold": None} == {**b, "fold": None}


def merge(runs: Sequence[dict]) -> dict:
    """Check that the headers of fold jobs (``--fold i``) describe one configuration."""
    if not runs:
        raise ValueError("nothing to merge")
    base = runs[0]
    for res in runs[1:]:
        if not _same(res["config"], base["config"]):
            a, b = {**base["config"], "fold": None}, {**res["config"], "fold": None}
            diff = sorted(k for k in a if a.get(k) != b.get(k))
            raise ValueError(f"the runs differ in configuration ({', '.join(diff)}): not one run")
    return {**base, "config": {**base["config"], "fold": None}}


def left_out(collection: Collection, fold: Fold) -> list[str]:
    """Classes with test pixels that are neither known nor OOD in a fold (no training annotation):
    they are not scored, and the report says so."""
    tested = set(collection.class_counts("truth")) - {BACKGROUND}
    return [collection.class_names[c - 1] for c in sorted(tested - set(fold.known) - set(fold.ood))]
