"""Cost of hardware accounting on a functional INT8 training step, and peak memory of the default run.

    python benchmarks/bench_accounting.py            # accounting overhead only
    python benchmarks/bench_accounting.py --memory   # also the default run's peak memory (about 2 minutes)

Measured side by side in one process, interleaved, on the default config's
model (tiny-CNN Rep-Net, 16x16 digits, batch 32):

* reference: the same INT8 training step (per-tensor quantization, exact INT8
  GEMMs, requantized write-back) with no accounting: the GEMMs run as plain
  integer matrix products and the weights are overwritten in place;
* accounted: the step on the macro, which counts every action (bit-plane
  activity of each GEMM, cell-by-cell write-back, digital updates), plus that
  step's share of scheduling, tallying and costing the recorded ops.

Prints the median step times and their ratio (target at most 1.25). With
``--memory`` it runs ``imcsim run configs/sas_mram_repnet.yaml`` in a child
process and prints its peak resident memory.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "sas_mram_repnet.yaml"


def build(account: bool, loaded):
    from imcsim.api import build_hardware
    from imcsim.workloads.backbones import build_backbone
    from imcsim.workloads.continual import _set_trainable, _train_mode, repnet_model, training_graph
    from imcsim.workloads.data import make_task
    from imcsim.workloads.int8 import Hardware, imc_modules

    card = loaded.config.workload
    torch.manual_seed(0)
    task = make_task("t", card.tasks[0].classes, "none", card.model.image_size, 0.25, np.random.default_rng(0))
    model = repnet_model(card, build_backbone(card.model.arch, 1, card.model.width), card.model.image_size,
                         per_task=True)
    model.add_head("t", task.n_classes)
    _set_trainable(model, card.method)
    x, y = task.x_train[: card.train.batch_size], task.y_train[: card.train.batch_size]
    graphs = {"t": training_graph(model, card.method, "t", (2, *x.shape[1:]))}  # traced before deployment
    macro = build_hardware(loaded).macro
    hw = Hardware(macro=macro, account=account, task="t")
    for m in imc_modules(model):
        m.deploy(hw)
    hw.ops.clear()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=card.train.lr, momentum=card.train.momentum)
    active = [m for m in imc_modules(model) if m.weight.requires_grad]
    state = {"step": 0}

    def step() -> None:
        _train_mode(model, card.method)
        hw.step, hw.samples = state["step"], len(y)
        state["step"] += 1
        opt.zero_grad()
        F.cross_entropy(model(x, "t"), y).backward()
        opt.step()
        with torch.no_grad():
            for m in active:
                m.sync()

    return step, hw, graphs


def accounting_overhead(repeats: int) -> tuple[float, float, float]:
    from imcsim.config import load_config
    from imcsim.cost import cost
    from imcsim.sim import TRAINING_PHASES, tally_ops
    from imcsim.sim.timeline import schedule_run

    loaded = load_config(CONFIG)
    ref_step, _, _ = build(False, loaded)
    acc_step, hw, graphs = build(True, loaded)
    for _ in range(3):  # warm-up: numba kernels, allocator
        ref_step()
        acc_step()
    ref_t, acc_t = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ref_step()
        t1 = time.perf_counter()
        acc_step()
        t2 = time.perf_counter()
        ref_t.append(t1 - t0)
        acc_t.append(t2 - t1)
    steps = len({op.step for op in hw.ops})
    t0 = time.perf_counter()
    tally = tally_ops(hw.ops)
    timeline = schedule_run(hw.ops, graphs, hw.macro)
    cost(tally.counts(TRAINING_PHASES), hw.macro.actions,
         {p: timeline.critical_by_phase.get(p, 0) for p in TRAINING_PHASES}, hw.macro.t_cycle_s)
    post = (time.perf_counter() - t0) / max(steps, 1)
    return statistics.median(ref_t), statistics.median(acc_t), post


def peak_memory_of_default_run() -> tuple[float, float]:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "imcsim.cli", "run", str(CONFIG), "--quiet", "--out",
                    str(ROOT / "out" / "bench_accounting")], check=True, cwd=ROOT)
    rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: kilobytes
    return rss_kb / 1024, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--memory", action="store_true", help="also measure the default run's peak memory")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {CONFIG.name} model, one batch")
    ref, acc, post = accounting_overhead(args.repeats)
    total = acc + post
    print(f"INT8 step, no accounting (reference):      {ref * 1e3:8.2f} ms")
    print(f"INT8 step on the macro, counted:          {acc * 1e3:8.2f} ms = {acc / ref:.2f} x reference")
    print(f"  + scheduling, tally and cost per step:  {post * 1e3:8.2f} ms")
    print(f"accounted step in all:                    {total * 1e3:8.2f} ms = {total / ref:.2f} x reference "
          f"(target at most 1.25: {'met' if total / ref <= 1.25 else 'missed'})")
    if args.memory:
        peak_mib, wall = peak_memory_of_default_run()
        print(f"default run (imcsim run {CONFIG.relative_to(ROOT)}): peak resident memory {peak_mib:.0f} MiB, "
              f"{wall:.0f} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
