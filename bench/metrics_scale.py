"""Wall time and peak memory of the OOD metrics over 3 x 10^7 and 10^8 pixel scores.

    .venv/bin/python bench/metrics_scale.py

Each measurement runs in a fresh child process (peak RSS from the OS, which includes the scores held
in memory). Scores are float32, 30 % OOD. ``ScoreHistogram`` is fed in chunks of 10^7 scores, as
a data loader would; the exact in-memory ``ood_metrics`` and scikit-learn's ``roc_auc_score`` run on
the sizes they can still handle on this machine.
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np
method, n = sys.argv[1], int(float(sys.argv[2]))
rng = np.random.default_rng(0)
n_ood = int(0.3 * n)
chunk = 10**7
def batches():
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        is_ood = np.arange(start, start + size) < n_ood
        s = rng.normal(0.0, 1.0, size).astype(np.float32) + np.where(is_ood, 0.0, 1.0).astype(np.float32)
        yield s[~is_ood], s[is_ood]
elapsed = 0.0
if method == "histogram":
    from oodseg.metrics import ScoreHistogram  # imported before the clock starts, as below
    hist = ScoreHistogram()
    for id_s, ood_s in batches():
        t = time.perf_counter(); hist.update(id_s, ood_s); elapsed += time.perf_counter() - t
    t = time.perf_counter(); out = hist.compute(); elapsed += time.perf_counter() - t
else:
    parts = list(batches())
    id_s = np.concatenate([p[0] for p in parts]); ood_s = np.concatenate([p[1] for p in parts])
    del parts
    # Imported before the clock starts: importing oodseg imports torch, seconds on its own.
    from oodseg.metrics import ood_metrics
    from sklearn.metrics import roc_auc_score
    t = time.perf_counter()
    if method == "exact":
        out = ood_metrics(id_s, ood_s)
    else:
        y = np.r_[np.ones(id_s.size, np.int8), np.zeros(ood_s.size, np.int8)]
        out = {"auroc": roc_auc_score(y, np.r_[id_s, ood_s])}
    elapsed = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": elapsed, "peak_mib": peak, "auroc": out["auroc"], "bound": out.get("auroc_error_bound")}))
"""

TARGET_S, TARGET_MIB = 5, 1024
RUNS = [
    ("histogram", "3e7"),
    ("histogram", "1e8"),
    ("exact", "3e7"),
    ("sklearn", "1e7"),
    ("sklearn", "3e7"),
]


def main() -> None:
    print(
        "| method | pixels | wall time (metrics only) | peak RSS (incl. scores in memory) | AUROC | error bound |"
    )
    print("|---|---|---|---|---|---|")
    verdict = "not measured (the run failed)"
    for method, n in RUNS:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, method, n], capture_output=True, text=True
        )
        if proc.returncode != 0:
            print(f"| {method} | {n} | failed: {proc.stderr.strip().splitlines()[-1]} | | | |")
            continue
        r = json.loads(proc.stdout)
        bound = f"{r['bound']:.1e}" if r["bound"] is not None else "exact"
        print(
            f"| {method} | {float(n):.0e} | {r['seconds']:.2f} s | {r['peak_mib']:.0f} MiB | {r['auroc']:.6f} | {bound} |"
        )
        if (method, n) == ("exact", "3e7"):
            met = r["seconds"] < TARGET_S and r["peak_mib"] < TARGET_MIB
            verdict = "within it" if met else "over it"
    print(
        f"\nbudget: exact metrics on 3e7 scores in < {TARGET_S} s and "
        f"< {TARGET_MIB} MiB peak RSS: {verdict}"
    )


if __name__ == "__main__":
    main()
