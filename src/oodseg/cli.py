"""Command line: ``oodseg crossval`` evaluates the method on a data set; ``oodseg train`` and
``oodseg predict`` use it on your own images. The options of the run (network, training,
unlabelled pixels, hardware, scoring, protocol) are generated from the configuration dataclasses
(:mod:`oodseg.config`, :class:`oodseg.crossval.CrossvalConfig`), where each is declared once;
this module adds only the options that name files. Every output is written atomically."""

from __future__ import annotations

import functools
import inspect
import json
import shutil
from collections.abc import Callable, Collection
from dataclasses import MISSING, fields, is_dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import numpy as np
import typer
from rich.console import Console

from oodseg.bundle import load_bundle, train
from oodseg.config import (
    DATA,
    OUTPUT,
    PANELS,
    SCORING,
    HardwareConfig,
    ScoringConfig,
    TrainConfig,
)
from oodseg.crossval import CrossvalConfig, crossval, prepare
from oodseg.detectors import DETECTORS
from oodseg.distributed import rank_and_world
from oodseg.evaluate import evaluate
from oodseg.io import check_nan_policy, read_image, read_mask, write_folder
from oodseg.manifest import ImageDataset, from_folders, image_files, load_manifest, with_nan_policy
from oodseg.progress import stages, track
from oodseg.report import (
    print_summary,
    write_evaluation,
    write_html,
    write_prediction,
    write_run,
    write_suggestions,
)
from oodseg.runstore import merge_runs
from oodseg.suggest import regions_csv, regions_json


def _config_parameters(cls: type, only: Collection[str] | None = None) -> list[inspect.Parameter]:
    """One keyword parameter per field of a configuration dataclass (nested ones flattened), its
    type, default, help and panel taken from the field; a tuple field is one comma-separated
    string."""
    hints = get_type_hints(cls)
    params = []
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            params += _config_parameters(hints[f.name], only)
            continue
        if only is not None and f.name not in only:
            continue
        kind = str | None if f.metadata["csv"] else hints[f.name]
        info = typer.Option(help=f.metadata["help"], rich_help_panel=f.metadata["panel"])
        default = f.default if f.default is not MISSING else None
        params.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=default,
                annotation=Annotated[kind, info],
            )
        )
    return params


def _build(cls: type, options: dict[str, Any]) -> Any:
    """A configuration dataclass from a command's options (those named like its fields)."""
    hints = get_type_hints(cls)
    values = {}
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            values[f.name] = _build(hints[f.name], options)
        elif f.name in options:
            value = options[f.name]
            values[f.name] = _csv(value) if f.metadata["csv"] and value is not None else value
    return cls(**values)


def configured(*classes: type, only: Collection[str] | None = None) -> Callable:
    """Give a command the options of these configuration dataclasses beside its own, every one
    listed in its panel: the command receives them as keyword arguments (``**options``) to build
    its configurations from."""

    def wrap(func: Callable) -> Callable:
        own = [
            p
            for p in inspect.signature(func, eval_str=True).parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        params = sorted(own + [p for c in classes for p in _config_parameters(c, only)], key=_panel)
        kw = inspect.Parameter.KEYWORD_ONLY
        params = [p.replace(kind=kw) if _panel(p) else p for p in params]

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            return func(**kwargs)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return wrap


def _panel(param: inspect.Parameter) -> int:
    """Where a parameter's option is listed: arguments first, then the panels in their order."""
    info = next(
        (m for m in getattr(param.annotation, "__metadata__", ()) if hasattr(m, "rich_help_panel")),
        None,
    )
    panel = getattr(info, "rich_help_panel", None)
    return PANELS.index(panel) + 1 if panel in PANELS else 0


def _opt(help: str, panel: str) -> Any:
    return typer.Option(help=help, rich_help_panel=panel)


# Options that name files, shared by several commands.
Overwrite = Annotated[bool, _opt("Replace a non-empty output folder.", OUTPUT)]
Resume = Annotated[bool, _opt("Continue an interrupted run from what it had finished.", OUTPUT)]
Quiet = Annotated[
    bool,
    _opt(
        "One line per stage instead of progress bars (as when the output is not a terminal).",
        OUTPUT,
    ),
]
NanPolicy = Annotated[str, _opt("NaN / Inf in an image: error, or zero (set them to 0).", DATA)]
Data = Annotated[Path | None, _opt("YAML manifest of the data set.", DATA)]
ModelDir = Annotated[Path, typer.Option(help="Model bundle folder (from oodseg train).")]
InputImages = Annotated[Path, typer.Option(help="An image file, or a folder of images.")]
Variable = Annotated[str | None, typer.Option(help="Array name inside .mat / .npz / HDF5 files.")]
Images = Annotated[Path | None, _opt("Folder of images.", DATA)]
Masks = Annotated[Path | None, _opt("Folder of masks, matched to images by stem.", DATA)]
Classes = Annotated[
    str | None, _opt("Comma-separated class names (mask values 1..K), with --images.", DATA)
]
Ignore = Annotated[int | None, _opt("Mask value that is neither a class nor unlabelled.", DATA)]
DEVICE_ONLY = ("device",)  # the one hardware option of suggest and evaluate

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()


def _version(show: bool) -> None:
    if show:
        console.print(f"oodseg {version('oodseg')}")
        raise typer.Exit()


@app.callback()
def main(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """oodseg: segmentation from sparse positive-only labels with pixel-wise OOD detection."""


def _csv(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


crossval_app = typer.Typer(no_args_is_help=False)
app.add_typer(crossval_app, name="crossval")


@crossval_app.callback(invoke_without_command=True)
@configured(CrossvalConfig)
def crossval_command(
    ctx: typer.Context,
    out: Annotated[
        Path | None, _opt("Output folder (must be new or empty, or use --overwrite).", OUTPUT)
    ] = None,
    data: Data = None,
    images: Images = None,
    masks: Masks = None,
    classes: Classes = None,
    background: Annotated[
        str | None, _opt("With --images: comma-separated mask values of known background.", DATA)
    ] = None,
    ignore: Ignore = None,
    nan_policy: NanPolicy = "error",
    resume: Resume = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    **options: Any,
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
        config = _build(
            CrossvalConfig, {**options, "dataset": "data" if own else options["dataset"]}
        )
        own_data = (
            _dataset(data, images, masks, classes, ignore, nan_policy, _ints(background))
            if own
            else None
        )
        if not own and (classes or background or ignore is not None):
            raise ValueError("--classes, --background and --ignore describe --images / --masks")
        plan = prepare(config, own_data, source=str(data or images), console=console, quiet=quiet)
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    if not resume:
        shutil.rmtree(partial, ignore_errors=True)
    try:
        results = crossval(config, partial, console=console, plan=plan, quiet=quiet)
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
    merged = {}

    def write(tmp: Path) -> None:
        merged.update(merge_runs(tmp, runs))
        write_run(tmp, merged)

    try:
        _new_folder(out, overwrite)
        write_folder(out, write)
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    print_summary(merged, console)
    console.print(f"{len(runs)} runs merged into {out}/")


@app.command("train")
@configured(TrainConfig, ScoringConfig)
def train_command(
    out: Annotated[Path, _opt("Model bundle folder to write.", OUTPUT)],
    data: Data = None,
    images: Images = None,
    masks: Masks = None,
    classes: Classes = None,
    ignore: Ignore = None,
    nan_policy: NanPolicy = "error",
    detector: Annotated[
        str | None,
        _opt("OOD detector stored with the model (default: pu with a PU head, else gen).", SCORING),
    ] = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    **options: Any,
) -> None:
    """Train a model on images with sparse masks and save it as a bundle (safetensors + JSON).
    Checkpoints go to a hidden folder beside --out (.NAME.checkpoints) until the bundle is saved."""
    checkpoints = out.parent / f".{out.name}.checkpoints"
    try:
        _new_folder(out, overwrite)
        if resume and not (checkpoints / "last.ckpt").is_file():
            raise ValueError(f"nothing to resume: {checkpoints / 'last.ckpt'} does not exist")
        if detector is not None and detector not in DETECTORS:
            raise ValueError(f"unknown detector {detector!r}; choose from: {', '.join(DETECTORS)}")
        config, scoring = _build(TrainConfig, options), _build(ScoringConfig, options)
        dataset = _dataset(data, images, masks, classes, ignore, nan_policy)
        if not resume:
            shutil.rmtree(checkpoints, ignore_errors=True)
        with stages(console, quiet=quiet) as progress:
            bundle = train(
                dataset,
                detector=detector,
                config=config,
                scoring=scoring,
                checkpoint_dir=checkpoints,
                resume=resume,
                progress=progress,
            )
        if rank_and_world()[0] != 0:
            return  # another DDP process: the first one saves the bundle
        bundle.save(out, overwrite=True)
        shutil.rmtree(checkpoints, ignore_errors=True)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    why = (
        "as --detector asked"
        if detector
        else "the known-vs-unknown head's score: RGB images whose data declare background "
        "train it, and it ranks background best there"
        if bundle.detector.name == "pu"
        else "the default: no known-vs-unknown head was trained"
    )
    chosen = " (auto: the pretrained encoder for RGB images, else the small network)"
    console.print(
        f"model written to {out}/ ({len(bundle.class_names)} classes, {bundle.bands} bands, "
        f"{bundle.detector.name} threshold {bundle.threshold:.4g} at TPR {bundle.tpr}); "
        f"network {bundle.preset}{chosen if config.preset == 'auto' else ''}; "
        f"detector {bundle.detector.name}: {why}"
    )


@app.command("predict")
@configured(HardwareConfig, only=("device", "precision", "channels_last"))
def predict_command(
    model: ModelDir,
    input: InputImages,
    out: Annotated[Path, typer.Option(help="Folder for the label maps, scores and overlays.")],
    variable: Variable = None,
    score_format: Annotated[str, typer.Option(help="Score maps as tif or npy.")] = "tif",
    quiet: Quiet = False,
    **options: Any,
) -> None:
    """Predict K+1 label maps (0 = OOD, 1..K the classes), score maps and overlays."""
    try:
        if score_format not in ("tif", "npy"):
            raise ValueError(f"unknown score format {score_format!r}; choose tif or npy")
        hardware = _build(HardwareConfig, options)
        bundle = load_bundle(model)
        files = [input] if input.is_file() else image_files(input)
        with stages(console, quiet=quiet) as progress:
            for path in track(files, progress, "predicting"):
                image = read_image(path, variable)
                labels, scores = bundle.predict(
                    image,
                    device=hardware.device,
                    precision=hardware.precision,
                    channels_last=hardware.channels_last,
                    source=str(path),
                )
                write_prediction(out, path, image, labels, scores, bundle, score_format)
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    console.print(f"{len(files)} prediction(s) written to {out}/")


@app.command("suggest")
@configured(HardwareConfig, only=DEVICE_ONLY)
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
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    **options: Any,
) -> None:
    """Rank, per image, the regions where a new stroke would help most (uncertain between known
    classes, or near the threshold): suggestions.json / .csv, an overlay with the regions
    numbered, and an interactive viewer page per image."""
    try:
        if top < 1 or min_area < 1:
            raise ValueError(f"--top and --min-area must be at least 1, got {top} and {min_area}")
        device = _build(HardwareConfig, options).device
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
            with stages(console, quiet=quiet) as progress:
                for path in track(files, progress, "suggesting"):
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
                    mask = (
                        None if annotated is None else np.clip(annotated, 0, 255).astype(np.uint8)
                    )
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
@configured(HardwareConfig, only=DEVICE_ONLY)
def evaluate_command(
    model: ModelDir,
    out: Annotated[Path, typer.Option(help="Folder for results and figures.")],
    data: Annotated[
        Path, typer.Option(help="YAML manifest of labelled images (its 'ood' values: OOD truth).")
    ],
    nan_policy: NanPolicy = "error",
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    **options: Any,
) -> None:
    """Score a model on labelled images: ID = the classes' pixels, OOD = the manifest's ood values."""
    try:
        device = _build(HardwareConfig, options).device
        _new_folder(out, overwrite)
        dataset = with_nan_policy(load_manifest(data), check_nan_policy(nan_policy))
        with stages(console, quiet=quiet) as progress:
            evaluation = evaluate(load_bundle(model), dataset, device=device, progress=progress)
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
    quiet: Quiet = False,
) -> None:
    """Write FOLDER/report.html: tables and figures in one self-contained page."""
    try:
        with stages(console, quiet=quiet) as progress:
            path = write_html(folder, progress)
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    console.print(f"report written to {path}")
