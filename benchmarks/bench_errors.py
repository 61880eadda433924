"""Cost of errors in the loop: a functional run that injects its device's errors against the same run without.

    python benchmarks/bench_errors.py

On the main config's scenario (tiny Rep-Net, one training epoch per task, no baselines), measured in one process,
interleaved: ``run.errors: inject`` (write errors, half-select and read-disturb flips drawn for every write-back
and every counted read) against ``run.errors: none``. The shipped SAS-MRAM card's error rates are tiny, so the
draws rarely flip anything; the ratio is what drawing costs. A second pair injects at an operating point that fails
most set pulses (``device.write.t_set=5ns``), where the injector rewrites most stored codes.

Prints the median times and the ratios. The target (at most 1.10: injection may add a tenth) holds for the
shipped card; at the failing operating point the run itself changes (failed cells are rewritten at every update,
so more writes are counted), and its ratio is shown for information.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "sas_mram_repnet.yaml"
SETS = ["workload.train.epochs=1", "workload.pretrain.epochs=2", "workload.baselines=[]"]
REPEATS = 4


def _time(sets: list[str]) -> float:
    from imcsim.api import run
    from imcsim.config import load_config

    t = time.perf_counter()
    run(load_config(CONFIG, sets))
    return time.perf_counter() - t


def main() -> None:
    _time(SETS)  # warm: imports, data, the pretrained backbone
    pairs = {"shipped card": [], "failing sets": []}
    for i in range(REPEATS):
        for label, extra in (("shipped card", []), ("failing sets", ["device.write.t_set=5ns"])):
            if i % 2:  # alternate the order: a run right after a different config pays for the switch
                clean = _time([*SETS, *extra, "run.errors=none"])
                inject = _time([*SETS, *extra])
            else:
                inject = _time([*SETS, *extra])
                clean = _time([*SETS, *extra, "run.errors=none"])
            pairs[label].append((inject, clean))
    for label, runs in pairs.items():
        inject = statistics.median(r[0] for r in runs)
        clean = statistics.median(r[1] for r in runs)
        target = " (target <= 1.10)" if label == "shipped card" else " (information: more writes)"
        print(f"{label:14s} inject {inject:6.2f} s   none {clean:6.2f} s   ratio {inject / clean:5.3f}{target}")


if __name__ == "__main__":
    main()
