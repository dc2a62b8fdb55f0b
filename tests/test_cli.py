"""Bad input: a clear error, exit code 2, and nothing written."""

from dataclasses import fields
from importlib.metadata import version

import click
import pytest
import typer.main
from typer.testing import CliRunner

from oodseg.cli import app
from oodseg.config import ScoringConfig, TrainConfig

runner = CliRunner()


def run(tmp_path, *args):
    out = tmp_path / "run"
    result = runner.invoke(app, ["crossval", "--out", str(out), *args])
    return result, out


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset", "pavia"], "unknown dataset 'pavia'"),
        (["--detectors", "msp,odinn"], "unknown detector odinn"),
        (["--hold-out", "Woods,Maize"], "no class 'Maize'"),
        (["--hold-out", "17"], "no class '17'"),
        (["--tpr", "1.0"], "strictly between 0 and 1"),
        (["--tpr", "0"], "strictly between 0 and 1"),
        (["--split", "random"], "unknown split 'random'"),
        (["--preset", "huge"], "unknown network preset 'huge'"),
        (["--annotation", "blobs"], "unknown annotation mode 'blobs'"),
        (["--loss", "focal"], "unknown loss 'focal'"),
        (["--features", "bottleneck"], "unknown feature choice 'bottleneck'"),
        (["--epochs", "0"], "epochs must be at least 1"),
        (["--patch", "50"], "patch side must be a multiple of 16"),
        (["--lr", "-1"], "learning rate must be positive"),
        # Options of another kind of data set are refused, not ignored.
        (["--scale", "0.5"], "--scale does not apply to a single scene"),
        (["--max-frames", "4"], "--max-frames does not apply to this data set (Endoscapes only)"),
        (["--protocols", "background"], "the background protocol needs background pixels"),
        (["--fold", "17"], "--fold 17: this run has 16 folds"),
        (["--classes", "a,b"], "--classes, --background and --ignore describe --images"),
        (["--threshold", "otsu"], "unknown threshold rule 'otsu'"),
        (["--unlabelled", "negative"], "unknown use of unlabelled pixels 'negative'"),
        (["--pu-prior", "1.2"], "the PU prior must be in (0, 1)"),
        (["--detectors", "gen,pu"], "the pu detector reads the known-vs-unknown head"),
        (["--smooth", "-1"], "--smooth is a standard deviation"),
        (["--smooth-classes", "-0.5"], "--smooth-classes is a standard deviation"),
        (["--input-pca", "-1"], "--input-pca must be at least 0"),
        (["--ensemble", "0"], "--ensemble must be at least 1"),
        (["--dropout", "1"], "--dropout is a rate in [0, 1)"),
        (["--resume"], "nothing to resume"),
        (["--preset", "pretrained"], "ImageNet-pretrained weights take RGB images"),
        (
            ["--preset", "reference", "--encoder-weights", "/nonexistent/b4.safetensors"],
            "encoder weights file not found",
        ),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(tmp_path, args, message):
    result, out = run(tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no partial folder left behind


def test_non_empty_output_folder_needs_overwrite(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["crossval", "--out", str(out)])
    assert result.exit_code == 2
    assert "exists and is not empty" in " ".join(result.output.split())
    assert (out / "keep.txt").read_text() == "mine"


def _options(command: str) -> set[str]:
    """The option names a command's --help lists."""
    group = typer.main.get_command(app)
    ctx = click.Context(group)
    cmd = group.get_command(ctx, command)
    return {o for p in cmd.params for o in p.opts if o.startswith("--")}


def test_train_and_crossval_offer_every_training_and_scoring_option_of_the_configuration():
    declared = {
        f"--{f.name.replace('_', '-')}" for c in (TrainConfig, ScoringConfig) for f in fields(c)
    }
    assert declared <= _options("train")
    assert declared <= _options("crossval")
    assert {"--weight-decay", "--devices", "--num-nodes", "--strategy"} <= _options("crossval")


@pytest.mark.parametrize("removed", ["--tta", "--stem", "--calibration"])
def test_options_removed_in_1_0_are_refused(tmp_path, removed):
    result, out = run(tmp_path, removed, "1")
    assert result.exit_code == 2 and "No such option" in result.output
    assert not out.exists()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"oodseg {version('oodseg')}"
