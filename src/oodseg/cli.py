"""Command line: ``oodseg crossval`` runs the whole pipeline and writes its report atomically."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from oodseg.crossval import DEFAULT_DETECTORS, CrossvalConfig, crossval
from oodseg.crossval_frames import FramesConfig, crossval_frames
from oodseg.datasets import FRAME_DATASETS
from oodseg.train import TrainConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()


@app.callback()
def main() -> None:
    """oodseg: segmentation from sparse positive-only labels with pixel-wise OOD detection."""


def _csv(value: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


@app.command("crossval")
def crossval_command(
    out: Annotated[
        Path, typer.Option(help="Output folder (must be new or empty, or use --overwrite).")
    ],
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
    tpr: Annotated[
        float, typer.Option(help="Target TPR of the threshold on calibration ID pixels.")
    ] = 0.95,
    preset: Annotated[
        str,
        typer.Option(
            help="Network preset: small (CPU) or reference (FlexibleUNet, EfficientNet-B4)."
        ),
    ] = "small",
    features: Annotated[
        str,
        typer.Option(
            help="Per-pixel features: last (decoder's last map) or hypercolumn (every decoder stage)."
        ),
    ] = "last",
    encoder_weights: Annotated[
        Path | None,
        typer.Option(help="Local encoder weights for the reference preset (never downloaded)."),
    ] = None,
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
    epochs: Annotated[int, typer.Option(help="Training epochs per fold.")] = TrainConfig.epochs,
    seed: Annotated[int, typer.Option(help="Seed of annotations, splits and training.")] = 0,
    loss: Annotated[
        str, typer.Option(help="Training loss: ce (cross-entropy) or logitnorm.")
    ] = "ce",
    logitnorm_temperature: Annotated[
        float, typer.Option(help="Temperature of the LogitNorm loss.")
    ] = TrainConfig.logitnorm_temperature,
    patches_per_epoch: Annotated[
        int, typer.Option(help="Training patches per epoch.")
    ] = TrainConfig.patches_per_epoch,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[
        str, typer.Option(help="32, or bf16-mixed (bf16 autocast, on a GPU).")
    ] = "32",
    channels_last: Annotated[
        bool, typer.Option(help="Channels-last memory format (faster convolutions on GPUs).")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
) -> None:
    """Leave-one-class-out cross-validation: train without each class in turn, score it as OOD."""
    try:
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
            raise ValueError(
                f"{out} exists and is not empty; choose a new folder or pass --overwrite"
            )
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
                annotation=annotation,
                budget=budget,
                margin=margin,
                **common,
            )
    except ValueError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    from oodseg.report import print_summary, write_frames_report, write_report

    # Everything is written into a sibling temporary folder that replaces --out only when complete.
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    tmp.mkdir(parents=True)
    try:
        if isinstance(config, FramesConfig):
            result = crossval_frames(config, checkpoint_root=tmp / "checkpoints", console=console)
            write_frames_report(tmp, result)
        else:
            result = crossval(config, checkpoint_root=tmp / "checkpoints", console=console)
            write_report(tmp, result)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        tmp.rename(out)
    except (ValueError, FileNotFoundError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for res in result.results.get("protocols", {"": result.results}).values():
        print_summary(res, console)
    console.print(f"results written to {out}/ (results.json, results.md, results.csv, figures)")
