"""Command line: ``oodseg crossval`` evaluates the method on a data set; ``oodseg train`` and
``oodseg predict`` use it on your own images. Every output is written atomically."""

from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

from oodseg.bundle import load_bundle, train
from oodseg.crossval import DEFAULT_DETECTORS, CrossvalConfig, crossval, prepare
from oodseg.distributed import rank_and_world
from oodseg.io import check_nan_policy, read_image, write_folder
from oodseg.manifest import (
    ImageDataset,
    from_folders,
    image_files,
    load_manifest,
    with_nan_policy,
)
from oodseg.threshold import DEFAULT_RULE
from oodseg.training import TrainConfig

# Options shared by several commands, declared once.
Device = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
Overwrite = Annotated[bool, typer.Option(help="Replace a non-empty output folder.")]
Tpr = Annotated[float, typer.Option(help="Target TPR of the threshold on calibration ID pixels.")]
Threshold = Annotated[
    str,
    typer.Option(
        help="Threshold rule of the K+1 map: tpr (keep --tpr of the calibration annotations, the "
        "paper's) or pu (flag the OOD share of the unlabelled pixels estimated by best-bin "
        "estimation)."
    ),
]
Preset = Annotated[
    str,
    typer.Option(help="Network preset: small (CPU) or reference (FlexibleUNet, EfficientNet-B4)."),
]
Features = Annotated[
    str,
    typer.Option(
        help="Per-pixel features: last (decoder's last map) or hypercolumn (every decoder stage)."
    ),
]
EncoderWeights = Annotated[
    Path | None,
    typer.Option(help="Local encoder weights for the reference preset (never downloaded)."),
]
Epochs = Annotated[int, typer.Option(help="Training epochs (per network).")]
PatchesPerEpoch = Annotated[int, typer.Option(help="Training patches per epoch.")]
BatchSize = Annotated[int, typer.Option(help="Training patches per batch.")]
Lr = Annotated[float, typer.Option(help="Learning rate (AdamW, cosine schedule).")]
Patch = Annotated[
    int | None, typer.Option(help="Training patch side (default: 64 for scenes, 128 for frames).")
]
Seed = Annotated[int, typer.Option(help="Seed of annotations, splits, training and calibration.")]
Loss = Annotated[str, typer.Option(help="Training loss: ce (cross-entropy) or logitnorm.")]
LogitnormTemperature = Annotated[float, typer.Option(help="Temperature of the LogitNorm loss.")]
Unlabelled = Annotated[
    str,
    typer.Option(
        help="Unlabelled pixels: auto (nnpu for RGB images whose data declare background, else "
        "ignore), ignore (the paper: no loss), nnpu (a known-vs-unknown head trained with the "
        "non-negative PU risk, through the whole network; adds the pu detector) or nnpu-head "
        "(the same head on the features of a CE-trained network)."
    ),
]
PuPrior = Annotated[
    float, typer.Option(help="Share of known-class pixels among the unlabelled ones (nnPU risk).")
]
PuWeight = Annotated[float, typer.Option(help="Weight of the nnPU risk next to cross-entropy.")]
Precision = Annotated[str, typer.Option(help="32, or bf16-mixed (bf16 autocast, on a GPU).")]
Tta = Annotated[
    str,
    typer.Option(
        help="Test-time augmentation: none, flip (outputs averaged over 4 flips) or dihedral "
        "(8 flips and quarter turns); a bundle predicts with the one it was calibrated with."
    ),
]
InputPca = Annotated[
    int,
    typer.Option(
        help="Hyperspectral input: images of more bands than this are projected onto this many "
        "principal components of the training pixels (0: every band)."
    ),
]
Stem = Annotated[
    int,
    typer.Option(
        help="Images of more bands than this pass through a learned 1 x 1 convolution to this "
        "many channels first (0: off)."
    ),
]
Dropout = Annotated[
    float,
    typer.Option(help="Dropout rate after every convolution block while training (0: off)."),
]
Ensemble = Annotated[
    int,
    typer.Option(
        help="Networks in a deep ensemble (seeds seed, seed + 1, ...): their mean logits and "
        "joined features are scored; training costs this many times one network's."
    ),
]
Smooth = Annotated[
    float,
    typer.Option(
        help="Gaussian smoothing of the score maps, standard deviation in pixels (0: off)."
    ),
]
SmoothClasses = Annotated[
    float,
    typer.Option(
        help="Gaussian smoothing of the class probabilities before the K+1 map's arg-max, "
        "standard deviation in pixels (0: off)."
    ),
]
ChannelsLast = Annotated[
    bool, typer.Option(help="Channels-last memory format (faster convolutions on GPUs).")
]
NanPolicy = Annotated[
    str, typer.Option(help="NaN / Inf in an image: error, or zero (set them to 0).")
]
Data = Annotated[Path | None, typer.Option(help="YAML manifest of the data set.")]
ModelDir = Annotated[Path, typer.Option(help="Model bundle folder (from oodseg train).")]
InputImages = Annotated[Path, typer.Option(help="An image file, or a folder of images.")]
Variable = Annotated[str | None, typer.Option(help="Array name inside .mat / .npz / HDF5 files.")]
Images = Annotated[Path | None, typer.Option(help="Folder of images.")]
Masks = Annotated[Path | None, typer.Option(help="Folder of masks, matched to images by stem.")]
Classes = Annotated[
    str | None, typer.Option(help="Comma-separated class names (mask values 1..K), with --images.")
]
Ignore = Annotated[
    int | None, typer.Option(help="Mask value that is neither a class nor unlabelled.")
]

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()


@app.callback()
def main() -> None:
    """oodseg: segmentation from sparse positive-only labels with pixel-wise OOD detection."""


def _csv(value: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


def _train_config(options: dict) -> TrainConfig:
    """The one place where commands build their training set-up (checked before any work): from
    a command's options, those named like :class:`TrainConfig`'s fields."""
    chosen = {f.name: options[f.name] for f in fields(TrainConfig) if f.name in options}
    if chosen.get("encoder_weights") is not None:
        chosen["encoder_weights"] = str(chosen["encoder_weights"])
    return TrainConfig(**chosen)


crossval_app = typer.Typer(no_args_is_help=False)
app.add_typer(crossval_app, name="crossval")


@crossval_app.callback(invoke_without_command=True)
def crossval_command(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option(help="Output folder (must be new or empty, or use --overwrite)."),
    ] = None,
    dataset: Annotated[
        str,
        typer.Option(
            help="Ready-made data set: indian_pines (embedded) or endoscapes (--data-root)."
        ),
    ] = "indian_pines",
    data: Data = None,
    images: Images = None,
    masks: Masks = None,
    classes: Classes = None,
    background: Annotated[
        str | None,
        typer.Option(help="With --images: comma-separated mask values of known background (OOD)."),
    ] = None,
    ignore: Ignore = None,
    nan_policy: NanPolicy = "error",
    data_root: Annotated[
        Path | None, typer.Option(help="Folder of Endoscapes in its official layout.")
    ] = None,
    protocols: Annotated[
        str | None,
        typer.Option(
            help="background (background as OOD) and/or loco (leave one class out), "
            "comma-separated; default: every protocol the data set allows."
        ),
    ] = None,
    hold_out: Annotated[
        str | None,
        typer.Option(
            help="loco: comma-separated classes to hold out (names or numbers); default all."
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            help="Single scene: scene (strokes anywhere, default) or blocks (disjoint blocks)."
        ),
    ] = None,
    margin: Annotated[
        int | None,
        typer.Option(
            help="Single scene, scene split: pixels around strokes not tested (default 1)."
        ),
    ] = None,
    calibration: Annotated[
        str | None,
        typer.Option(
            help="Single scene, scene split: calibration strokes held out at random (strokes, "
            "default) or as the strokes nearest to one of each class's (region)."
        ),
    ] = None,
    scale: Annotated[
        float | None,
        typer.Option(
            help="Frame sets: resize factor of the images (Endoscapes default 0.5, else 1)."
        ),
    ] = None,
    max_frames: Annotated[
        int | None,
        typer.Option(help="Endoscapes: frames kept per split, evenly spread (quick runs)."),
    ] = None,
    baselines: Annotated[
        bool,
        typer.Option(
            help="Also train each fold's fully supervised baseline (on the dense labels)."
        ),
    ] = True,
    detectors: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated detector names (default: "
            + ",".join(DEFAULT_DETECTORS)
            + "; pu first where the network has the PU head)."
        ),
    ] = None,
    tpr: Tpr = 0.95,
    threshold: Threshold = DEFAULT_RULE,
    annotation: Annotated[
        str, typer.Option(help="Simulated annotator: strokes or points.")
    ] = "strokes",
    budget: Annotated[
        float | None,
        typer.Option(
            help="Share of each class's pixels annotated (default: 0.05 scene, 0.10 blocks, "
            "0.02 per frame)."
        ),
    ] = None,
    preset: Preset = "small",
    features: Features = "last",
    encoder_weights: EncoderWeights = None,
    epochs: Epochs = TrainConfig.epochs,
    patches_per_epoch: PatchesPerEpoch = TrainConfig.patches_per_epoch,
    batch_size: BatchSize = TrainConfig.batch_size,
    lr: Lr = TrainConfig.lr,
    patch: Patch = None,
    seed: Seed = 0,
    loss: Loss = "ce",
    logitnorm_temperature: LogitnormTemperature = TrainConfig.logitnorm_temperature,
    unlabelled: Unlabelled = TrainConfig.unlabelled,
    pu_prior: PuPrior = TrainConfig.pu_prior,
    pu_weight: PuWeight = TrainConfig.pu_weight,
    device: Device = "auto",
    precision: Precision = "32",
    channels_last: ChannelsLast = False,
    tta: Tta = "none",
    input_pca: InputPca = TrainConfig.input_pca,
    stem: Stem = TrainConfig.stem,
    dropout: Dropout = TrainConfig.dropout,
    smooth: Smooth = TrainConfig.smooth,
    smooth_classes: SmoothClasses = TrainConfig.smooth_classes,
    ensemble: Ensemble = TrainConfig.ensemble,
    fold: Annotated[
        int | None,
        typer.Option(
            help="Run only job i (1-based: the folds, then the baseline; one job of a cluster "
            "array); merge with 'crossval merge'."
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(help="Continue an interrupted run into --out, keeping its finished folds."),
    ] = False,
    overwrite: Overwrite = False,
) -> None:
    """Cross-validation without OOD labels: train without each class in turn and score it as OOD
    (loco), and score the declared background as OOD (background), with baselines. On the
    embedded Indian Pines scene, Endoscapes, or your densely labelled images (--data, or
    --images/--masks/--classes)."""
    if ctx.invoked_subcommand is not None:
        return
    partial = None
    try:
        if out is None:
            raise ValueError("--out is required: the folder for the results")
        partial = out.parent / f".{out.name}.partial"
        if resume and not partial.is_dir():
            raise ValueError(f"nothing to resume: {partial} does not exist")
        if not resume:
            _new_folder(out, overwrite)
        own = data is not None or images is not None
        config = CrossvalConfig(
            dataset="data" if own else dataset,
            data_root=str(data_root) if data_root else None,
            protocols=_csv(protocols),
            detectors=None if detectors is None else _csv(detectors) or (),
            classes=_csv(hold_out),
            tpr=tpr,
            threshold=threshold,
            annotation=annotation,
            budget=budget,
            split=split,
            margin=margin,
            calibration=calibration,
            scale=scale,
            max_frames=max_frames,
            baselines=baselines,
            fold=fold,
            train=_train_config(locals()),
        )
        own_data = (
            _dataset(data, images, masks, classes, ignore, nan_policy, _ints(background))
            if own
            else None
        )
        if not own and (classes or background or ignore is not None):
            raise ValueError("--classes, --background and --ignore describe --images / --masks")
        plan = prepare(config, own_data, source=str(data or images), console=console)
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    from oodseg.report import print_summary

    if not resume:
        shutil.rmtree(partial, ignore_errors=True)
    try:
        results = crossval(config, partial, console=console, plan=plan)
    except BaseException as e:
        if partial.is_dir():
            console.print(
                f"[yellow]stopped: finished folds are kept in {partial}; run the same command "
                "with --resume to continue[/]"
            )
        if isinstance(e, ValueError | FileNotFoundError):
            console.print(f"[red]error:[/] {e}")
            raise typer.Exit(2) from None
        raise
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    partial.rename(out)
    print_summary(results, console)
    console.print(f"results written to {out}/ (results.json, results.md, results.csv, figures)")


def _ints(value: str | None) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in _csv(value) or ())
    except ValueError:
        raise ValueError(f"--background takes mask values (numbers), got {value!r}") from None


def _dataset(
    data: Path | None,
    images: Path | None,
    masks: Path | None,
    classes: str | None,
    ignore: int | None,
    nan_policy: str,
    background: tuple[int, ...] = (),
) -> ImageDataset:
    """The data set of ``--data`` (a manifest) or of ``--images`` / ``--masks`` / ``--classes``."""
    if data is not None:
        if images is not None or masks is not None or classes or background or ignore is not None:
            raise ValueError(
                "give either --data (classes, background and ignore values in the manifest), or "
                "--images / --masks / --classes [--background --ignore], not both"
            )
        dataset = load_manifest(data)
    elif images is not None and masks is not None and classes:
        dataset = from_folders(images, masks, _csv(classes) or (), ignore, background)
    else:
        raise ValueError("give --data MANIFEST.yaml, or --images DIR --masks DIR --classes a,b,c")
    return with_nan_policy(dataset, check_nan_policy(nan_policy))


def _new_folder(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ValueError(f"{out} exists and is not empty; choose a new folder or pass --overwrite")


@crossval_app.command("merge")
def merge_command(
    runs: Annotated[list[Path], typer.Argument(help="Output folders of fold jobs (--fold i).")],
    out: Annotated[Path, typer.Option(help="Folder for the merged results.")],
    overwrite: Overwrite = False,
) -> None:
    """Merge fold jobs of one configuration into one set of results and figures."""
    from oodseg.report import print_summary, write_merged

    merged = {}
    try:
        _new_folder(out, overwrite)
        write_folder(out, lambda tmp: merged.update(write_merged(tmp, runs)))
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    print_summary(merged, console)
    console.print(f"{len(runs)} runs merged into {out}/")


@app.command("train")
def train_command(
    out: Annotated[Path, typer.Option(help="Model bundle folder to write.")],
    data: Data = None,
    images: Images = None,
    masks: Masks = None,
    classes: Classes = None,
    ignore: Ignore = None,
    detector: Annotated[
        str | None,
        typer.Option(
            help="OOD detector stored with the model (default: pu with a PU head, else gen)."
        ),
    ] = None,
    tpr: Tpr = 0.95,
    threshold: Threshold = DEFAULT_RULE,
    preset: Preset = "small",
    features: Features = "last",
    encoder_weights: EncoderWeights = None,
    epochs: Epochs = TrainConfig.epochs,
    patches_per_epoch: PatchesPerEpoch = TrainConfig.patches_per_epoch,
    batch_size: BatchSize = TrainConfig.batch_size,
    lr: Lr = TrainConfig.lr,
    patch: Patch = None,
    seed: Seed = 0,
    loss: Loss = "ce",
    logitnorm_temperature: LogitnormTemperature = TrainConfig.logitnorm_temperature,
    unlabelled: Unlabelled = TrainConfig.unlabelled,
    pu_prior: PuPrior = TrainConfig.pu_prior,
    pu_weight: PuWeight = TrainConfig.pu_weight,
    nan_policy: NanPolicy = "error",
    device: Device = "auto",
    precision: Precision = "32",
    channels_last: ChannelsLast = False,
    tta: Tta = "none",
    input_pca: InputPca = TrainConfig.input_pca,
    stem: Stem = TrainConfig.stem,
    dropout: Dropout = TrainConfig.dropout,
    smooth: Smooth = TrainConfig.smooth,
    smooth_classes: SmoothClasses = TrainConfig.smooth_classes,
    ensemble: Ensemble = TrainConfig.ensemble,
    devices: Annotated[
        int, typer.Option(help="Processes per node: GPUs, or CPU processes (gloo).")
    ] = 1,
    num_nodes: Annotated[int, typer.Option(help="Nodes (multi-node DDP).")] = 1,
    strategy: Annotated[
        str, typer.Option(help="Lightning strategy: auto, or ddp for several devices / nodes.")
    ] = "auto",
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted run from its last epoch's checkpoint.")
    ] = False,
    overwrite: Overwrite = False,
) -> None:
    """Train a model on images with sparse masks and save it as a bundle (safetensors + JSON).
    Checkpoints go to a hidden folder beside --out (.NAME.checkpoints) until the bundle is saved."""
    from oodseg.detectors import DETECTORS

    checkpoints = out.parent / f".{out.name}.checkpoints"
    try:
        _new_folder(out, overwrite)
        if resume and not (checkpoints / "last.ckpt").is_file():
            raise ValueError(f"nothing to resume: {checkpoints / 'last.ckpt'} does not exist")
        if detector is not None and detector not in DETECTORS:
            raise ValueError(f"unknown detector {detector!r}; choose from: {', '.join(DETECTORS)}")
        if not 0 < tpr < 1:
            raise ValueError(f"target TPR must be strictly between 0 and 1, got {tpr}")
        config = _train_config(locals())
        dataset = _dataset(data, images, masks, classes, ignore, nan_policy)
        if not resume:
            shutil.rmtree(checkpoints, ignore_errors=True)
        bundle = train(
            dataset,
            detector=detector,
            tpr=tpr,
            threshold=threshold,
            config=config,
            checkpoint_dir=checkpoints,
            resume=resume,
        )
        if rank_and_world()[0] != 0:
            return  # another DDP process: the first one saves the bundle
        bundle.save(out, overwrite=True)
        shutil.rmtree(checkpoints, ignore_errors=True)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    console.print(
        f"model written to {out}/ ({len(bundle.class_names)} classes, {bundle.bands} bands, "
        f"{bundle.detector.name} threshold {bundle.threshold:.4g} at TPR {bundle.tpr})"
    )


@app.command("predict")
def predict_command(
    model: ModelDir,
    input: InputImages,
    out: Annotated[Path, typer.Option(help="Folder for the label maps, scores and overlays.")],
    variable: Variable = None,
    score_format: Annotated[str, typer.Option(help="Score maps as tif or npy.")] = "tif",
    device: Device = "auto",
    precision: Precision = "32",
    channels_last: ChannelsLast = False,
) -> None:
    """Predict K+1 label maps (0 = OOD, 1..K the classes), score maps and overlays."""
    from rich.progress import track

    from oodseg.report import write_prediction

    try:
        if score_format not in ("tif", "npy"):
            raise ValueError(f"unknown score format {score_format!r}; choose tif or npy")
        bundle = load_bundle(model)
        files = [input] if input.is_file() else image_files(input)
        for path in track(files, description="predicting", console=console):
            image = read_image(path, variable)
            labels, scores = bundle.predict(
                image,
                device=device,
                precision=precision,
                channels_last=channels_last,
                source=str(path),
            )
            write_prediction(out, path, image, labels, scores, bundle, score_format)
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    console.print(f"{len(files)} prediction(s) written to {out}/")


@app.command("suggest")
def suggest_command(
    model: ModelDir,
    input: InputImages,
    out: Annotated[Path, typer.Option(help="Folder for the ranked regions, overlays and pages.")],
    masks: Annotated[
        Path | None,
        typer.Option(help="Folder of the images' sparse masks (matched by stem): never suggested."),
    ] = None,
    top: Annotated[int, typer.Option(help="Regions kept per image.")] = 10,
    min_area: Annotated[int, typer.Option(help="Smallest region, in pixels.")] = 9,
    variable: Variable = None,
    device: Device = "auto",
    overwrite: Overwrite = False,
) -> None:
    """Rank, per image, the regions where a new stroke would help most (uncertain between known
    classes, or near the threshold): suggestions.json / .csv, an overlay with the regions
    numbered, and an interactive viewer page per image."""
    from rich.progress import track

    from oodseg.io import read_mask
    from oodseg.report import write_suggestions
    from oodseg.suggest import regions_csv, regions_json

    try:
        if top < 1 or min_area < 1:
            raise ValueError(f"--top and --min-area must be at least 1, got {top} and {min_area}")
        _new_folder(out, overwrite)
        bundle = load_bundle(model)
        files = [input] if input.is_file() else image_files(input)
        mask_of = {}
        if masks is not None:
            mask_of = {m.stem: m for m in image_files(masks)}
            missing = [f.name for f in files if f.stem not in mask_of]
            if missing:
                raise FileNotFoundError(f"{masks}: no mask for {', '.join(missing[:5])}")
        found = []

        def write(tmp: Path) -> None:
            for path in track(files, description="suggesting", console=console):
                image = read_image(path, variable)
                annotated = None
                if masks is not None:
                    annotated = read_mask(mask_of[path.stem])
                    if annotated.shape != image.shape[:2]:
                        raise ValueError(
                            f"{mask_of[path.stem]}: mask {annotated.shape} does not match the "
                            f"image {path} {image.shape[:2]}"
                        )
                regions, maps = bundle.suggest(
                    image,
                    annotated=None if annotated is None else annotated > 0,
                    name=path.stem,
                    top=top,
                    min_area=min_area,
                    device=device,
                )
                mask = None if annotated is None else np.clip(annotated, 0, 255).astype(np.uint8)
                write_suggestions(tmp, path, image, regions, maps, bundle, mask)
                found.extend(regions)
            (tmp / "suggestions.json").write_text(json.dumps(regions_json(found), indent=1))
            (tmp / "suggestions.csv").write_text(regions_csv(found))

        write_folder(out, write)
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    console.print(f"{len(found)} regions over {len(files)} image(s) written to {out}/")


@app.command("evaluate")
def evaluate_command(
    model: ModelDir,
    out: Annotated[Path, typer.Option(help="Folder for results and figures.")],
    data: Annotated[
        Path, typer.Option(help="YAML manifest of labelled images (its 'ood' values: OOD truth).")
    ],
    nan_policy: NanPolicy = "error",
    device: Device = "auto",
    overwrite: Overwrite = False,
) -> None:
    """Score a model on labelled images: ID = the classes' pixels, OOD = the manifest's ood values."""
    from oodseg.evaluate import evaluate
    from oodseg.report import write_evaluation

    try:
        _new_folder(out, overwrite)
        dataset = with_nan_policy(load_manifest(data), check_nan_policy(nan_policy))
        evaluation = evaluate(load_bundle(model), dataset, device=device)
        write_folder(out, lambda tmp: write_evaluation(tmp, evaluation))
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    pooled = evaluation.results["pooled"]
    shown = ", ".join(f"{k} {v:.3f}" for k, v in pooled.items() if isinstance(v, float))
    console.print(f"pooled: {shown}\nresults written to {out}/")


@app.command("report")
def report_command(
    folder: Annotated[Path, typer.Argument(help="A crossval or evaluate output folder.")],
) -> None:
    """Write FOLDER/report.html: tables and figures in one self-contained page."""
    from oodseg.report import write_html

    try:
        path = write_html(folder)
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    console.print(f"report written to {path}")
