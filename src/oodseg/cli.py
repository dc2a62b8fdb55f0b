"""Command line: ``oodseg crossval`` evaluates the method on a data set; ``oodseg train`` and
``oodseg predict`` use it on your own images. Every output is written atomically."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from oodseg.bundle import load_bundle, train
from oodseg.crossval import DEFAULT_DETECTORS, CrossvalConfig, crossval
from oodseg.crossval_frames import FramesConfig, crossval_frames
from oodseg.datasets import FRAME_DATASETS
from oodseg.distributed import rank_and_world
from oodseg.io import check_nan_policy, read_image, write_folder
from oodseg.manifest import (
    ImageDataset,
    from_folders,
    image_files,
    load_manifest,
    with_nan_policy,
)
from oodseg.training import TrainConfig

# Options shared by several commands, declared once.
Device = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
Overwrite = Annotated[bool, typer.Option(help="Replace a non-empty output folder.")]
Tpr = Annotated[float, typer.Option(help="Target TPR of the threshold on calibration ID pixels.")]
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
Precision = Annotated[str, typer.Option(help="32, or bf16-mixed (bf16 autocast, on a GPU).")]
ChannelsLast = Annotated[
    bool, typer.Option(help="Channels-last memory format (faster convolutions on GPUs).")
]
NanPolicy = Annotated[
    str, typer.Option(help="NaN / Inf in an image: error, or zero (set them to 0).")
]

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()


@app.callback()
def main() -> None:
    """oodseg: segmentation from sparse positive-only labels with pixel-wise OOD detection."""


def _csv(value: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


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
        str, typer.Option(help="Data set: indian_pines (embedded) or endoscapes (--data-root).")
    ] = "indian_pines",
    data_root: Annotated[
        Path | None,
        typer.Option(help="Folder of a frame data set in its official layout (endoscapes)."),
    ] = None,
    protocols: Annotated[
        str,
        typer.Option(
            help="Frame data sets: background (background as OOD) and/or loco (leave one class "
            "out), comma-separated."
        ),
    ] = "background,loco",
    scale: Annotated[
        float, typer.Option(help="Frame data sets: resize factor of the frames.")
    ] = 0.5,
    max_frames: Annotated[
        int | None,
        typer.Option(help="Frame data sets: frames kept per split, evenly spread (quick runs)."),
    ] = None,
    baselines: Annotated[
        bool,
        typer.Option(
            help="Frame data sets: also train the fully supervised (background as a class) baseline."
        ),
    ] = True,
    split: Annotated[
        str, typer.Option(help="Protocol: scene (strokes anywhere) or blocks (disjoint blocks).")
    ] = "scene",
    detectors: Annotated[str, typer.Option(help="Comma-separated detector names.")] = ",".join(
        DEFAULT_DETECTORS
    ),
    classes: Annotated[
        str | None,
        typer.Option(help="Comma-separated classes to hold out (names or numbers); default all."),
    ] = None,
    tpr: Tpr = 0.95,
    preset: Preset = "small",
    features: Features = "last",
    encoder_weights: EncoderWeights = None,
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
    margin: Annotated[
        int, typer.Option(help="scene split: pixels around strokes left out of the test pixels.")
    ] = 1,
    epochs: Epochs = TrainConfig.epochs,
    seed: Annotated[int, typer.Option(help="Seed of annotations, splits and training.")] = 0,
    loss: Annotated[
        str, typer.Option(help="Training loss: ce (cross-entropy) or logitnorm.")
    ] = "ce",
    logitnorm_temperature: Annotated[
        float, typer.Option(help="Temperature of the LogitNorm loss.")
    ] = TrainConfig.logitnorm_temperature,
    patches_per_epoch: PatchesPerEpoch = TrainConfig.patches_per_epoch,
    device: Device = "auto",
    precision: Precision = "32",
    channels_last: ChannelsLast = False,
    fold: Annotated[
        int | None,
        typer.Option(
            help="Run only fold i (1-based; one job of a cluster array), merge with 'crossval merge'."
        ),
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Leave-one-class-out cross-validation: train without each class in turn, score it as OOD.
    On a frame data set (endoscapes), also background as OOD, with baselines."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        if out is None:
            raise ValueError("--out is required: the folder for the results")
        _new_folder(out, overwrite)
        train = TrainConfig(
            epochs=epochs,
            patches_per_epoch=patches_per_epoch,
            seed=seed,
            device=device,
            loss=loss,
            logitnorm_temperature=logitnorm_temperature,
            precision=precision,
            channels_last=channels_last,
        )
        common = {
            "detectors": _csv(detectors) or (),
            "classes": _csv(classes),
            "tpr": tpr,
            "preset": preset,
            "features": features,
            "train": train,
            "encoder_weights": str(encoder_weights) if encoder_weights else None,
        }
        if dataset in FRAME_DATASETS:
            if data_root is None:
                raise ValueError(f"--dataset {dataset} needs --data-root (its folder)")
            config = FramesConfig(
                data_root=str(data_root),
                protocols=_csv(protocols) or (),
                scale=scale,
                max_frames=max_frames,
                baselines=baselines,
                **({"budget": budget} if budget is not None else {}),
                **common,
            )
        else:
            config = CrossvalConfig(
                dataset=dataset,
                split=split,
                fold=fold,
                annotation=annotation,
                budget=budget,
                margin=margin,
                **common,
            )
    except ValueError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    from oodseg.report import print_summary, write_frames_report, write_report

    results = {}

    def run(tmp: Path) -> None:
        if isinstance(config, FramesConfig):
            result = crossval_frames(config, checkpoint_root=tmp / "checkpoints", console=console)
            write_frames_report(tmp, result)
        else:
            result = crossval(config, checkpoint_root=tmp / "checkpoints", console=console)
            write_report(tmp, result)
        results.update(result.results)
        shutil.rmtree(tmp / "checkpoints", ignore_errors=True)  # only needed while running

    try:
        write_folder(out, run)
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    for res in results.get("protocols", {"": results}).values():
        print_summary(res, console)
    console.print(f"results written to {out}/ (results.json, results.md, results.csv, figures)")


def _dataset(
    data: Path | None,
    images: Path | None,
    masks: Path | None,
    classes: str | None,
    ignore: int | None,
    nan_policy: str,
) -> ImageDataset:
    """The data set of ``--data`` (a manifest) or of ``--images`` / ``--masks`` / ``--classes``."""
    if data is not None:
        dataset = load_manifest(data)
    elif images is not None and masks is not None and classes:
        dataset = from_folders(images, masks, _csv(classes) or (), ignore)
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
    data: Annotated[Path | None, typer.Option(help="YAML manifest of the data set.")] = None,
    images: Annotated[Path | None, typer.Option(help="Folder of images.")] = None,
    masks: Annotated[
        Path | None, typer.Option(help="Folder of sparse masks, matched to images by stem.")
    ] = None,
    classes: Annotated[
        str | None, typer.Option(help="Comma-separated class names (mask values 1..K).")
    ] = None,
    ignore: Annotated[
        int | None, typer.Option(help="Mask value that is neither a class nor unlabelled.")
    ] = None,
    detector: Annotated[str, typer.Option(help="OOD detector stored with the model.")] = "gen",
    tpr: Tpr = 0.95,
    preset: Preset = "small",
    features: Features = "last",
    encoder_weights: EncoderWeights = None,
    epochs: Epochs = TrainConfig.epochs,
    patches_per_epoch: PatchesPerEpoch = TrainConfig.patches_per_epoch,
    seed: Annotated[int, typer.Option(help="Seed of training and calibration.")] = 0,
    nan_policy: NanPolicy = "error",
    device: Device = "auto",
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
    checkpoints = out.parent / f".{out.name}.checkpoints"
    try:
        _new_folder(out, overwrite)
        if resume and not (checkpoints / "last.ckpt").is_file():
            raise ValueError(f"nothing to resume: {checkpoints / 'last.ckpt'} does not exist")
        if not resume:
            shutil.rmtree(checkpoints, ignore_errors=True)
        dataset = _dataset(data, images, masks, classes, ignore, nan_policy)
        config = TrainConfig(
            epochs=epochs,
            patches_per_epoch=patches_per_epoch,
            seed=seed,
            device=device,
            devices=devices,
            num_nodes=num_nodes,
            strategy=strategy,
        )
        bundle = train(
            dataset,
            detector=detector,
            preset=preset,
            features=features,
            tpr=tpr,
            config=config,
            encoder_weights=encoder_weights,
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
    model: Annotated[Path, typer.Option(help="Model bundle folder (from oodseg train).")],
    input: Annotated[Path, typer.Option(help="An image file, or a folder of images.")],
    out: Annotated[Path, typer.Option(help="Folder for the label maps, scores and overlays.")],
    variable: Annotated[
        str | None, typer.Option(help="Array name inside .mat / .npz / HDF5 files.")
    ] = None,
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


@app.command("evaluate")
def evaluate_command(
    model: Annotated[Path, typer.Option(help="Model bundle folder (from oodseg train).")],
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
    except FileNotFoundError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    console.print(f"report written to {path}")
