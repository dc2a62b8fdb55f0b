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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from rich.console import Console

from oodseg.config import (
    BACKGROUND,
    DATA,
    OUTPUT,
    PRESETS,
    PROTOCOL,
    SCORING,
    ScoringConfig,
    TrainConfig,
    option,
)
from oodseg.datasets import DATASETS, FRAME_DATASETS, load_dataset
from oodseg.detectors import DETECTORS
from oodseg.engine import Collection, Fold, FoldResult, collect, run_fold
from oodseg.figures import PanelView, plot_panels, rgb_view
from oodseg.manifest import ImageDataset
from oodseg.progress import stages
from oodseg.report import write_run
from oodseg.runstore import assemble, fold_stem, load_fold_files, same_config, save_fold
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
from oodseg.suggest import suggest_regions
from oodseg.viewer import Layer, Picture, save_layer, save_picture

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

    dataset: str = option(
        "indian_pines",
        "Ready-made data set: indian_pines (embedded) or endoscapes (with --data-root).",
        DATA,
    )
    data_root: str | None = option(None, "Folder of Endoscapes in its official layout.", DATA)
    scale: float | None = option(
        None, "Frame sets: resize factor of the images (Endoscapes default 0.5, else 1).", DATA
    )
    max_frames: int | None = option(
        None, "Endoscapes: frames kept per split, evenly spread (quick runs).", DATA
    )
    protocols: tuple[str, ...] | None = option(
        None,
        "background (background as OOD) and/or loco (leave one class out), comma-separated; "
        "default: every protocol the data set allows.",
        PROTOCOL,
        csv=True,
    )
    hold_out: tuple[str, ...] | None = option(
        None,
        "loco: classes to hold out, comma-separated (names or numbers); default all.",
        PROTOCOL,
        csv=True,
    )
    split: str | None = option(
        None,
        "Single scene: scene (strokes anywhere, default) or blocks (disjoint blocks).",
        PROTOCOL,
    )
    margin: int | None = option(
        None, "Single scene, scene split: pixels around strokes not tested (default 1).", PROTOCOL
    )
    annotation: str = option("strokes", "Simulated annotator: strokes or points.", PROTOCOL)
    annotation_seed: int | None = option(
        None,
        "Seed of the simulated annotator and the split (default: --seed). Fixed while --seed "
        "varies, it measures how much one network varies on the same annotations.",
        PROTOCOL,
    )
    budget: float | None = option(
        None,
        "Share of each class's pixels annotated (default: 0.05 scene, 0.10 blocks, 0.02 per "
        "frame).",
        PROTOCOL,
    )
    baselines: bool = option(
        True,
        "Also train each fold's fully supervised network on the dense labels (the upper bound; "
        "doubles the training time).",
        PROTOCOL,
    )
    fold: int | None = option(
        None,
        "Run only job i (1-based; one job of a cluster array); join them with 'crossval merge'.",
        OUTPUT,
    )
    detectors: tuple[str, ...] | None = option(
        None,
        "Detectors, comma-separated (default: " + ",".join(DEFAULT_DETECTORS) + "; pu first "
        "where the network has the PU head).",
        SCORING,
        csv=True,
    )
    train: TrainConfig = field(default_factory=TrainConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)

    def __post_init__(self) -> None:
        if self.fold is not None and self.fold < 1:
            raise ValueError(f"--fold counts from 1, got {self.fold}")
        if self.split is not None and self.split not in SCENE_BUDGET:
            raise ValueError(f"unknown split {self.split!r}; choose scene or blocks")
        if self.annotation not in ("strokes", "points"):
            raise ValueError(
                f"unknown annotation mode {self.annotation!r}; choose strokes or points"
            )
        if self.budget is not None and not 0 < self.budget <= 1:
            raise ValueError(f"annotation budget must be in (0, 1], got {self.budget}")
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
                "the pu detector reads the known-vs-unknown head: train with --unlabelled nnpu, "
                "or leave pu out of --detectors"
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
    quiet: bool = False,
) -> Plan:
    """Check every option against the data set and read it once (normalisation, class counts),
    before any training: a bad option or file fails here, in seconds. Progress goes to
    ``console`` (bars, or with ``quiet`` one line per stage)."""
    scene = config.dataset in DATASETS and data is None
    single = scene or (data is not None and len(data.items) == 1)
    what = "a single scene" if single else "a frame set"
    endoscapes = config.dataset in FRAME_DATASETS and data is None
    refused = {
        "split": (config.split, not single, what),
        "margin": (config.margin, not single, what),
        "scale": (config.scale, single, what),
        "max_frames": (config.max_frames, not endoscapes, "this data set (Endoscapes only)"),
    }
    for name, (value, wrong, kind) in refused.items():
        if value is not None and wrong:
            raise ValueError(f"--{name.replace('_', '-')} does not apply to {kind}")
    if config.dataset in FRAME_DATASETS and config.data_root is None:
        raise ValueError(f"--dataset {config.dataset} needs --data-root (its folder)")
    if config.data_root is not None and config.dataset not in FRAME_DATASETS:
        raise ValueError("--data-root applies to --dataset endoscapes only")
    seed = config.train.seed if config.annotation_seed is None else config.annotation_seed
    common = {"annotation": config.annotation, "budget": config.budget, "seed": seed}
    if data is not None:
        collection = dataset_collection(
            data,
            source=source,
            split=config.split or "scene",
            margin=1 if config.margin is None else config.margin,
            scale=config.scale or 1.0,
            **common,
        )
    elif scene:
        collection = scene_collection(
            load_dataset(config.dataset),
            config.split or "scene",
            margin=1 if config.margin is None else config.margin,
            **common,
        )
    else:
        collection = endoscapes_collection(
            config.data_root,
            scale=0.5 if config.scale is None else config.scale,
            max_frames=config.max_frames,
            **common,
        )
    with stages(console or Console(), quiet=quiet) as progress:
        collect(
            collection,
            progress,
            input_pca=config.train.input_pca,
            preset=config.train.preset,
        )
    if data is not None:
        _check_declared(collection, data, source)
    where = source if data is not None else collection.name  # what an error names
    allowed = available_protocols(collection)
    protocols = config.protocols or allowed
    for p in protocols:
        if p not in allowed:
            raise ValueError(
                f"{where}: the {p} protocol needs background pixels in the test truth, and the "
                "data declare none (a manifest's 'background' / 'ood' values)"
            )
    config = _for_data(config, collection)
    if config.scoring.threshold == "pu" and not _unlabelled_for_calibration(collection):
        raise ValueError(
            f"{where}: the pu threshold rule needs pixels left unannotated in the calibration "
            "images, and every pixel there is annotated; give --threshold tpr, or calibration "
            "(val) images with unannotated pixels"
        )
    jobs, skipped = folds(collection, [p for p in PROTOCOLS if p in protocols], config.hold_out)
    if not jobs:
        raise ValueError(
            f"{where}: no fold can be run: "
            + "; ".join(f"{s['held_out']}: {s['reason']}" for s in skipped)
            + " (label more test pixels of the classes, or mark images split: test)"
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
        "date": time.strftime("%Y-%m-%d"),
    }
    if data is not None and data.palette:
        header["colour_masks"] = data.colour_summary()
        if console is not None:
            console.print(
                "colour masks: {snapped} pixels snapped to the palette, {ignored} ignored".format(
                    **header["colour_masks"]
                )
                + f" (palette_tolerance {data.palette_tolerance:g})"
            )
    return Plan(collection, jobs, skipped, baseline, header, config)


def _for_data(config: CrossvalConfig, collection: Collection) -> CrossvalConfig:
    """``config`` with what depends on the data set made concrete: the use of the unlabelled
    pixels (:meth:`TrainConfig.resolved`) and, unless given, the detectors."""
    train = config.train.resolved(collection.declares_background, collection.bands, collection.top)
    detectors = config.detectors or (("pu",) if train.known_head else ()) + DEFAULT_DETECTORS
    if "pu" in detectors and not train.known_head:
        raise ValueError(
            "the pu detector reads the known-vs-unknown head, which --unlabelled auto trains only "
            "on RGB images whose data declare background: give --unlabelled nnpu, or leave pu "
            "out of --detectors"
        )
    return replace(config, train=train, detectors=detectors)


def _unlabelled_for_calibration(collection: Collection) -> int:
    """Pixels of the calibration images that no stroke covers (what the pu rule samples)."""
    sizes = collection.sides
    return sum(
        sizes[i][0] * sizes[i][1]
        - int(collection.per_sample["train"][i, 1:].sum())
        - int(collection.per_sample["calibration"][i, 1:].sum())
        for i in collection.ids("calibration")
    )


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
    quiet: bool = False,
) -> dict:
    """Run the folds (each with its fully supervised baseline) into the folder ``out``: each fold's
    results and panels are written as it finishes, fold files already there (an interrupted run
    of the same configuration) are kept and not rerun. Returns ``results.json``'s content."""
    console = console or Console()
    start = time.perf_counter()
    plan = plan or prepare(config, data, source=source, console=console, quiet=quiet)
    out.mkdir(parents=True, exist_ok=True)
    setup = out / "run.json"
    if setup.is_file():
        earlier = json.loads(setup.read_text())
        if not same_config(earlier["config"], plan.header["config"]):
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
    with stages(console, quiet=quiet) as progress:
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
                config.scoring,
                config.detectors,
                baseline=plan.baseline,
                progress=progress,
            )
            _write_fold(out, order, result, collection=c, seconds=time.perf_counter() - t)
    fold_files = load_fold_files(out)
    # Wall time of this run, plus the time of the folds an interrupted run had finished.
    kept = sum(f["seconds"] for f in fold_files if f["order"] in done)
    header = {**plan.header, "seconds": round(time.perf_counter() - start + kept, 1)}
    skipped = plan.skipped if config.fold in (None, 1) else []
    results = assemble(header, fold_files, skipped)
    write_run(out, results)
    return results


def _write_fold(
    out: Path,
    order: int,
    result: FoldResult,
    *,
    collection: Collection,
    seconds: float = 0.0,
) -> None:
    """A finished fold into the run store (its rows, baselines and figure data), with its panels
    (PNG, in ``out``) and what its viewer pages show."""
    fold = result.fold
    record = {
        "order": order,
        "seconds": seconds,
        "fold": {
            "protocol": fold.protocol,
            "name": fold.name,
            "known": [collection.class_names[c - 1] for c in fold.known],
            "left_out": left_out(collection, fold),
        },
        "rows": result.rows,
        "closed_set": result.closed_set,
        "fully_supervised": result.fully_supervised,
    }
    stem = fold_stem(order, fold.key)
    if result.panels:
        views = [_panel_view(collection, fold, p) for p in result.panels]
        det = result.rows[0]["detector"]
        title = f"{collection.name}, {fold.protocol}: OOD = {fold.name}"
        plot_panels(views, collection.class_names, det, title, out / f"panel_{stem}.png")
        for panel, view in zip(result.panels, views, strict=True):
            _keep_for_viewer(out, collection, fold, panel, view, stem)
    arrays = {
        f"{det}|{name}": np.asarray(value)
        for det, fig in result.figures.items()
        for name, value in fig.items()
    }
    save_fold(out, record, arrays)


def _panel_view(collection: Collection, fold, panel) -> PanelView:
    s = collection.load(panel.sample)
    ood = np.isin(s.truth, fold.ood)
    return PanelView(
        s.name,
        rgb_view(s.image, collection.rgb_bands),
        s.truth,
        s.train + s.calibration,
        panel.prediction,
        panel.score_map,
        panel.threshold,
        ood if ood.any() else None,
    )


def _keep_for_viewer(
    out: Path, collection: Collection, fold, panel, view: PanelView, stem: str
) -> None:
    """A panel image's picture and this fold's maps and suggested regions, for its viewer page."""
    s = collection.load(panel.sample)
    strokes = np.where(np.isin(view.annotated, fold.known), view.annotated, 0).astype(np.uint8)
    picture = Picture.of(s.image, (view.rgb * 255).round(), collection.rgb_bands)
    save_picture(out, s.name, picture, collection.class_names)
    regions = suggest_regions(
        s.name,
        panel.classes,
        panel.margin,
        panel.score_map,
        panel.threshold,
        collection.class_names,
        annotated=strokes > 0,
    )
    layer = Layer(
        f"{fold.protocol}: OOD = {fold.name}",
        panel.classes.astype(np.uint8),
        panel.score_map,
        panel.threshold,
        tuple(fold.known),
        regions,
        strokes,
    )
    save_layer(out, s.name, stem, layer)


def left_out(collection: Collection, fold: Fold) -> list[str]:
    """Classes with test pixels that are neither known nor OOD in a fold (no training annotation):
    they are not scored, and the report says so."""
    tested = set(collection.class_counts("truth")) - {BACKGROUND}
    return [collection.class_names[c - 1] for c in sorted(tested - set(fold.known) - set(fold.ood))]
