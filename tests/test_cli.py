"""Bad input: a clear error, exit code 2, and nothing written."""

import pytest
from typer.testing import CliRunner

from oodseg.cli import app

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
        (["--tta", "rot45"], "unknown test-time augmentation 'rot45'"),
        (["--smooth", "-1"], "--smooth is a standard deviation"),
        (["--smooth-classes", "-0.5"], "--smooth-classes is a standard deviation"),
        (["--input-pca", "-1"], "--input-pca is a number of components, 0 or more"),
        (["--stem", "-2"], "--stem is a number of channels, 0 or more"),
        (["--dropout", "1"], "--dropout is a rate in [0, 1)"),
        (
            ["--split", "blocks", "--calibration", "region"],
            "--calibration does not apply to the blocks split",
        ),
        (["--calibration", "corner"], "unknown calibration hold-out 'corner'"),
        (["--resume"], "nothing to resume"),
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
