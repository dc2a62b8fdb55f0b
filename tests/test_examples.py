"""The README's runnable example stays runnable."""

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_data.py"


def test_own_data_example_runs_end_to_end(tmp_path):
    run = subprocess.run(
        [sys.executable, str(EXAMPLE), str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    shares = {}
    for line in run.stdout.splitlines():
        if "% of the new scan" in line:
            name, share = line.split(":")
            shares[name.strip()] = float(share.split("%")[0])
    assert set(shares) == {"OOD", "Corn-notill", "Soybean-mintill", "Woods"}
    assert abs(sum(shares.values()) - 100) < 0.5
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "bundle.json",
        "detector.safetensors",
        "model.safetensors",
    ]
