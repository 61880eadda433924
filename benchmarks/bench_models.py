"""Real-size networks in seconds: cost-only runs against one fp32 torch training step of the same model.

    python benchmarks/bench_models.py [--only vgg8 bert_base_lora ...] [--no-torch]

Each case runs in a fresh process (as `imcsim run` would): the time to import imcsim, the time of
``api.run`` after the imports (tracing, counting, scheduling, costing: the whole run), the whole process,
and its peak resident memory (VmHWM of the process image: a forked child's ru_maxrss keeps its parent's). In the same run, on the same machine, the parent times one fp32 torch
training step (forward, backward, SGD) of the same network at the same batch, and prints each run's time
as a ratio to it. The transformer steps are timed at batch 1 and scaled to the batch (their cost is linear
in it; a Flan-T5-large step at batch 32 takes minutes on two cores).

Targets: the VGG-8 CIFAR-10 epoch (250 steps of batch 200) at most 3 s for the whole process, 1 s in
process after imports and 600 MB; BERT-base LoRA and LoRAFusion at most 30 s and 2 GB each; Flan-T5-large
LoRA and LoRAFusion at most 60 s and 2 GB each.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BERT = ["workload.cost_only.model={arch: bert_base, seq_len: 128}", "circuit.array.n_subarrays=200000"]
CASES = {  # name -> (config, overrides, target seconds (whole process), target MB, torch reference)
    "vgg8_epoch": ("sas_mram_vgg8_cifar10_cost.yaml", [], 3.0, 600, "vgg8"),
    "bert_base_lora": ("reram_lora_bert_mini_cost.yaml", BERT, 30.0, 2048, "bert_base"),
    "bert_base_lorafusion": ("reram_lorafusion_bert_mini_cost.yaml", BERT, 30.0, 2048, "bert_base"),
    "flan_t5_large_lora": ("reram_lora_flan_t5_large_cost.yaml", [], 60.0, 2048, "flan_t5_large"),
    "flan_t5_large_lorafusion": ("reram_lorafusion_flan_t5_large_cost.yaml", [], 60.0, 2048, "flan_t5_large"),
}

CHILD = """
import json, sys, time
t0 = time.perf_counter()
from imcsim.api import run
from imcsim.config import load_config
t1 = time.perf_counter()
report = run(load_config(sys.argv[1], json.loads(sys.argv[2])))
t2 = time.perf_counter()
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"import_s": t1 - t0, "run_s": t2 - t1, "peak_mb": hwm / 1024,
                  "energy_train_j": report.metrics["energy_train_j"], "trainable": report.metrics["trainable_params"]}))
"""


def run_case(config: str, sets: list[str]) -> dict:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "configs" / config), json.dumps(sets)],
                         capture_output=True, text=True, check=False, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"{config}: {res.stderr.strip().splitlines()[-1]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    return out


def torch_step_s(which: str) -> tuple[float, str]:
    """Seconds of one fp32 training step of the reference network (the median of three after a warm-up)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    if which == "vgg8":
        from imcsim.models.zoo import build_vgg8_cifar

        net = torch.nn.Sequential(build_vgg8_cifar(3), torch.nn.Linear(1024, 10))
        x, y, scale, note = torch.randn(200, 3, 32, 32), torch.randint(0, 10, (200,)), 1.0, "batch 200"
    else:
        from imcsim.workloads.adaptation import TRANSFORMERS
        from imcsim.workloads.transformer import TinyTransformer

        p = TRANSFORMERS[which]
        gated = p.get("ff") == "gated_gelu"
        net = TinyTransformer(int(p["vocab"]), int(p["d_model"]), int(p["n_heads"]), int(p["n_layers"]),
                              int(p["d_ff"]), 128, 2, int(p.get("decoder_layers", 0)), gated=gated,
                              norm=str(p.get("norm", "layer")), bias=bool(p.get("bias", True)),
                              position=str(p.get("position", "learned")))
        x, y, scale, note = torch.randint(0, int(p["vocab"]), (1, 128)), torch.randint(0, 2, (1,)), 32.0, \
            "batch 1 x 32"
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    times = []
    for _ in range(4):
        t0 = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[1] * scale, note


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=sorted(CASES), help="cases to run (default: all)")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch reference steps")
    args = ap.parse_args()
    names = args.only or list(CASES)
    refs: dict[str, tuple[float, str]] = {}
    ok = True
    print(f"{'case':<26} {'import s':>8} {'run s':>7} {'process s':>9} {'peak MB':>8} {'torch step s':>13} "
          f"{'run/step':>9}  target")
    for name in names:
        config, sets, target_s, target_mb, ref = CASES[name]
        r = run_case(config, sets)
        if not args.no_torch and ref not in refs:
            refs[ref] = torch_step_s(ref)
        step, note = refs.get(ref, (float("nan"), ""))
        met = r["process_s"] <= target_s and r["peak_mb"] <= target_mb
        ok &= met
        print(f"{name:<26} {r['import_s']:8.2f} {r['run_s']:7.2f} {r['process_s']:9.2f} {r['peak_mb']:8.0f} "
              f"{step:13.2f} {r['run_s'] / step:9.3f}  <= {target_s:.0f} s, {target_mb} MB: "
              f"{'met' if met else 'MISSED'} ({note})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
