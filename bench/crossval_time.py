"""Wall time and peak memory of a cross-validation (by default every Indian Pines fold).

    .venv/bin/python bench/crossval_time.py [--split scene|blocks] [extra `oodseg crossval` options]

Runs the CLI in a child process and reads its peak resident memory from the OS, then prints a table.
The outputs go to a temporary folder unless ``--out DIR`` is among the options.
Target: under 10 minutes on a 2-core CPU.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if "--out" in argv:
            out = Path(argv[argv.index("--out") + 1])
        else:
            out = Path(tmp) / "run"
            argv = ["--out", str(out), *argv]
        cmd = [sys.executable, "-m", "oodseg", "crossval", *argv]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        res = json.loads((out / "results.json").read_text())
    protocols = res["protocols"]
    n_folds = sum(len({r["held_out"] for r in p["folds"]}) for p in protocols.values())
    n_detectors = len(res["config"]["detectors"])
    print("| command | folds x detectors | wall time | peak RSS | machine |")
    print("|---|---|---|---|---|")
    print(
        f"| oodseg crossval {' '.join(argv)} | {n_folds} x {n_detectors} | {wall:.0f} s "
        f"({wall / 60:.1f} min) | {peak_mib:.0f} MiB | {res['machine']} |"
    )
    for name, p in protocols.items():
        print()
        print(f"| {name}: detector | AUROC | FPR95 | ID acc. | OOD recall |")
        print("|---|---|---|---|---|")
        for det, s in p["summary"].items():
            cells = [
                f"{s[m]['mean']:.3f}" + ("" if s[m]["std"] is None else f" ± {s[m]['std']:.3f}")
                for m in ("auroc", "fpr95", "id_accuracy", "ood_recall")
            ]
            print(f"| {det} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
