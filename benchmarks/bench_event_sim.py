"""Event simulator speed: one cost-only training step of a MobileNetV2 Rep-Net (224x224, batch 8).

    python benchmarks/bench_event_sim.py

Measured side by side in one process:

* torch: one real float32 forward + backward step of the same Rep-Net model
  (frozen MobileNetV2 backbone, six side modules, a head) on this machine;
* imcsim, cold: counting the step's ops from shapes (meta tensors) and
  activity statistics, then scheduling a new shape signature (task graph,
  discrete-event simulation with the compiled engine) and tallying it; the
  same with the simpy oracle (:mod:`imcsim.sim.oracle`, test-only), which
  gives the same schedule, for reference;
* imcsim, warm: scheduling and tallying a step whose shape signature was
  seen before (every later step of a run): the recorded order is replayed.

Prints events per second and each time as a ratio to the torch step (target
for scheduling and tallying: at most 0.05).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "sas_mram_repnet_mobilenetv2_cost.yaml"


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def torch_step_s(card, repeats: int) -> float:
    from imcsim.workloads.backbones import build_backbone
    from imcsim.workloads.continual import _set_trainable, _train_mode, repnet_model

    spec = card.cost_only
    torch.manual_seed(0)
    model = repnet_model(card, build_backbone(card.model.arch, spec.in_channels, card.model.width), spec.image_size)
    task = card.tasks[0]
    model.add_head(task.name, len(task.classes))
    _set_trainable(model, card.method)
    _train_mode(model, card.method)
    x = torch.randn(spec.batch_size, spec.in_channels, spec.image_size, spec.image_size)
    y = torch.randint(0, len(task.classes), (spec.batch_size,))

    def step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x, task.name), y).backward()

    step()  # warm-up
    return _best(step, repeats)


def main() -> int:
    from imcsim.api import build_hardware
    from imcsim.config import load_config
    from imcsim.sim import tally_ops
    from imcsim.sim.engine import compile_graph, retime
    from imcsim.sim.graph import build_step_graph
    from imcsim.sim.oracle import simulate_simpy
    from imcsim.sim.replay import Scheduler
    from imcsim.sim.timeline import macro_view, split_steps
    from imcsim.workloads.continual import run_cost_only

    loaded = load_config(CONFIG)
    card = loaded.config.workload
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {card.model.arch} Rep-Net, "
          f"{card.cost_only.image_size}x{card.cost_only.image_size}, batch {card.cost_only.batch_size}")
    t_torch = torch_step_s(card, repeats=3)

    run_cost_only(card, build_hardware(loaded).macro, 0)  # warm-up: imports, numba compilation
    samples = []
    for _ in range(3):
        macro = build_hardware(loaded).macro
        t0 = time.perf_counter()
        result = run_cost_only(card, macro, 0)
        t1 = time.perf_counter()
        _, steps = split_steps(result.ops)
        (step_ops,) = steps.values()
        layers = result.graphs[step_ops[0].task]
        scheduler = Scheduler(macro_view(macro))
        sched = scheduler.schedule(step_ops, layers)
        tally_ops(step_ops)
        t2 = time.perf_counter()
        scheduler.schedule(step_ops, layers)  # same shape signature: replayed
        tally_ops(step_ops)
        t3 = time.perf_counter()
        graph = build_step_graph(step_ops, layers, macro_view(macro))
        order, simpy_events, _ = simulate_simpy(graph)
        ref = retime(graph, compile_graph(graph, order, simpy_events))
        tally_ops(step_ops)
        t4 = time.perf_counter()
        assert np.array_equal(ref.start, sched.start), "the engine and the simpy oracle disagree"
        samples.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3, scheduler.events, len(sched.graph.tasks),
                        sched.makespan))
    count_s = min(s[0] for s in samples)
    cold_s = min(s[1] for s in samples)
    warm_s = min(s[2] for s in samples)
    simpy_s = min(s[3] for s in samples)
    events, tasks, makespan = samples[0][4], samples[0][5], samples[0][6]
    print(f"torch float32 forward+backward step: {t_torch * 1e3:8.1f} ms")
    print(f"counting the step's ops (meta shapes, synthetic deployment): {count_s * 1e3:8.1f} ms "
          f"= {count_s / t_torch:.3f} x torch")
    print(f"schedule + tally, new signature (compiled engine): {cold_s * 1e3:8.1f} ms = {cold_s / t_torch:.3f} x torch; "
          f"{tasks} tasks, {events} events, {events / cold_s:,.0f} events/s")
    print(f"schedule + tally, new signature (simpy oracle, same schedule): {simpy_s * 1e3:8.1f} ms = "
          f"{simpy_s / t_torch:.3f} x torch; {events / simpy_s:,.0f} events/s")
    print(f"schedule + tally, seen signature (replay): {warm_s * 1e3:8.1f} ms = {warm_s / t_torch:.4f} x torch; "
          f"{tasks / warm_s:,.0f} tasks/s")
    print(f"scheduled step latency: {makespan} cycles; spread of cold runs "
          f"{statistics.pstdev([s[1] for s in samples]) * 1e3:.1f} ms")
    print(f"target (schedule + tally at most 0.05 x torch): cold {'met' if cold_s / t_torch <= 0.05 else 'missed'}, "
          f"warm {'met' if warm_s / t_torch <= 0.05 else 'missed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
