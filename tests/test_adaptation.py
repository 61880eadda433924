"""LoRA vs LoRAFusion on the ReRAM crossbar: per-task writes, their growth with steps, trainable counts."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from imcsim.api import run
from imcsim.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["workload.train.samples=120", "workload.pretrain.epochs=2", "workload.pretrain.samples=400",
         "workload.pool_train.epochs=1", "workload.pool_train.samples=120", "workload.n_tasks=2"]


def report(config: str, *sets: str):
    return run(load_config(ROOT / "configs" / config, [*SHORT, *sets]))


def _update_writes(sets: list[str]):
    """Per-step adapter write pulses and the run's hardware, for a short LoRA run with ``sets``."""
    from collections import defaultdict

    from imcsim.api import _check_run_options, _execute, build_hardware

    loaded = load_config(ROOT / "configs" / "reram_lora.yaml", [*SHORT, *sets])
    hw = build_hardware(loaded)
    result = _execute(loaded, loaded.config.workload, hw, _check_run_options(loaded), None, {})
    per_step: dict[int, int] = defaultdict(int)
    for op in result.ops:
        if op.kind == "write" and op.phase == "update":
            per_step[op.step] += sum(n for (comp, action), n in op.counts.items()
                                     if comp == hw.device.component and action.endswith("_pulse"))
    return per_step, result, hw


def test_lorafusion_writes_no_reram_cell_per_task():
    r = report("reram_lorafusion.yaml", "workload.train.epochs=1")
    assert r.metrics["write_pulses_deploy"] > 0  # the pool and the base are programmed once
    assert r.metrics["write_pulses"] == 0
    assert all(row["write_pulses"] == 0 for row in r.tables["per_task"])
    # trainable: one coefficient per pool adapter per block, a magnitude per adapted output unit, the head
    d, blocks, pool, adapted = 32, 2, 4, 4
    assert r.metrics["trainable_params"] == blocks * pool + adapted * d + (d * 2 + 2)


def test_lora_in_reram_writes_grow_with_steps():
    """Every optimizer step reprograms adapter cells, so the cumulative ReRAM writes grow step by step."""
    per_step, result, _ = _update_writes(["workload.train.epochs=2"])
    steps = sum(result.steps_per_task)
    assert sorted(per_step) == list(range(steps))
    writing = [s for s in range(steps) if per_step[s] > 0]
    assert len(writing) >= steps // 2  # most steps move some adapter's INT8 image; a step that moves none writes none
    written = {op.layer for op in result.ops if op.kind == "write" and op.phase == "update"}
    assert written
    assert all(".lora_" in name for name in written)
    from imcsim.sim.tally import measured_activity

    by_layer = measured_activity(result.ops)["weight_change_by_layer"]
    assert set(by_layer) == {".lora_A", ".lora_B"}
    assert all(0 < f <= 1 for f in by_layer.values())
    # A (r x k) and B (d x r) on q and v of 2 blocks, rank 4, d = k = 32, plus the head
    assert result.trainable_params == 4 * 4 * (32 + 32) + (32 * 2 + 2)


def test_lora_adapters_in_sram_leave_reram_untouched_after_deployment():
    r = report("reram_lora.yaml", "workload.train.epochs=1", "workload.adapter_memory=sram")
    assert r.metrics["write_pulses"] == 0
    assert r.metrics["energy_train_j"] > 0


def cost_report(config: str, *sets: str):
    return run(load_config(ROOT / "configs" / config, list(sets)))


def test_cost_only_lora_at_bert_mini_size_counts_the_formula_parameters():
    r = cost_report("reram_lora_bert_mini_cost.yaml")
    layers, targets, rank, d = 4, 2, 4, 256
    head = d * 2 + 2
    assert r.metrics["trainable_params"] == layers * targets * rank * (d + d) + head
    assert r.metrics["training_steps"] == 3 * 1000
    assert r.metrics["write_pulses"] > 0
    assert r.metrics["cells_programmed_per_step"] > 0
    # per task: 1000 steps of the counted step; the three alike tasks cost the same
    rows = r.tables["per_task"]
    assert len(rows) == 3
    assert len({row["write_pulses"] for row in rows}) == 1
    assert sum(row["write_pulses"] for row in rows) == pytest.approx(r.metrics["write_pulses"], rel=1e-6)
    assert r.metrics["lifetime_tasks"] == pytest.approx(r.metrics["lifetime_steps"] / 1000)


def test_cost_only_lorafusion_writes_nothing_per_task_and_counts_its_parameters():
    r = cost_report("reram_lorafusion_bert_mini_cost.yaml")
    layers, pool, adapted, d = 4, 4, 8, 256
    assert r.metrics["trainable_params"] == layers * pool + adapted * d + (d * 2 + 2)
    assert r.metrics["write_pulses"] == 0
    assert r.metrics["cells_programmed"] == 0
    assert r.metrics["lifetime_tasks"] == float("inf")


def test_adapters_in_sram_cost_only_write_nothing_and_do_their_gemms_digitally():
    reram = cost_report("reram_lora_bert_mini_cost.yaml")
    sram = cost_report("reram_lora_bert_mini_cost.yaml", "workload.adapter_memory=sram")
    assert sram.metrics["write_pulses"] == 0
    assert sram.metrics["subarrays_used"] < reram.metrics["subarrays_used"]  # A and B left the array
    macs = lambda r: r.costs["train"].counts.get(("digital", "mac_int8"), 0)  # noqa: E731
    assert macs(sram) > macs(reram)


def test_attention_products_are_traced_and_counted_in_the_digital_unit():
    import torch

    from imcsim.api import build_hardware
    from imcsim.workloads.costonly import weightless_ops
    from imcsim.workloads.dataflow import trace_dataflow
    from imcsim.workloads.transformer import TinyTransformer

    hw = build_hardware(load_config(ROOT / "configs" / "reram_lora.yaml"))
    d, heads, n, batch, layers = 32, 4, 10, 3, 2
    model = TinyTransformer(12, d, heads, layers, 64, n, 2, decoder_layers=1).to("meta")  # the decoder: two attentions
    tokens = torch.zeros((batch, n), dtype=torch.long, device="meta")
    graph = trace_dataflow(model, lambda: model(tokens), samples=batch)
    products = [c for c in graph.calls if c.weightless]
    attentions = layers + 2
    assert len(products) == 2 * attentions  # Q K^T and P V of each attention
    assert {c.name.rsplit(".", 1)[0] for c in products} == {"enc.0.attn", "enc.1.attn", "dec.0.self_attn",
                                                            "dec.0.cross"}
    fwd = [op for c in products for op in weightless_ops(hw.macro, c, batch, backward=False)]
    both = [op for c in products for op in weightless_ops(hw.macro, c, batch)]
    per_attention = 2 * batch * heads * n * n * (d // heads)
    assert sum(op.counts[("digital", "mac_int8")] for op in fwd) == attentions * per_attention
    # every operand carries a gradient (all of this model trains): each product has two backward GEMMs
    assert sum(op.counts[("digital", "mac_int8")] for op in both) == 3 * attentions * per_attention
    assert all(len(op.chunk_cycles) == batch and op.chunk_cycles.sum() == op.cycles for op in both)
    model.requires_grad_(False)  # a frozen model: no gradient reaches the products
    frozen = trace_dataflow(model, lambda: model(tokens), samples=batch)
    assert all(op.phase == "forward" for c in frozen.calls if c.weightless for op in weightless_ops(hw.macro, c, batch))


def test_zero_initialised_trainable_weights_deploy_on_their_fan_in_range():
    import math

    import torch

    from imcsim.workloads.int8 import QMAX, WEIGHT_HEADROOM, deploy_scale

    rank, d = 4, 32
    assert deploy_scale(torch.zeros(d, rank), trainable=True) == pytest.approx(
        WEIGHT_HEADROOM / math.sqrt(rank) / QMAX)
    assert deploy_scale(torch.zeros(d, rank), trainable=False) == pytest.approx(1 / QMAX)
    w = torch.tensor([[0.5, -1.0], [0.25, 0.0]])
    assert deploy_scale(w, trainable=False) == pytest.approx(1.0 / QMAX)
    assert deploy_scale(w, trainable=True) == pytest.approx(WEIGHT_HEADROOM / QMAX)


def test_cost_only_change_fraction_per_layer_suffix():
    from imcsim.workloads.costonly import ActivityStats

    stats = ActivityStats(forward_plane_density=[0.5] * 8, error_plane_density=[0.5] * 8, weight_bit_density=0.5,
                          weight_change_fraction=0.1, weight_change_by_layer={".lora_B": 0.4, "q.lora_B": 0.6})
    assert stats.change_fraction("enc.0.attn.v.lora_B") == 0.4
    assert stats.change_fraction("enc.0.attn.q.lora_B") == 0.6  # the longest matching suffix wins
    assert stats.change_fraction("enc.0.attn.q.lora_A") == 0.1
    base = cost_report("reram_lora_bert_mini_cost.yaml")
    hot_b = cost_report("reram_lora_bert_mini_cost.yaml",
                        "workload.cost_only.activity.weight_change_by_layer={.lora_B: 0.9}")
    assert hot_b.metrics["cells_programmed_per_step"] > base.metrics["cells_programmed_per_step"]
    assert hot_b.metrics["writes_max_per_cell_per_step"] > base.metrics["writes_max_per_cell_per_step"]


@pytest.mark.parametrize(("setting", "needle"), [
    ("workload.cost_only.model.n_heads=3", "n_heads=3 must divide d_model=256"),
    ("workload.adapters.targets=[zz]", "unknown projections ['zz']"),
    ("workload.adapters.targets=[cross.q]", "no decoder_layers"),
    ("workload.n_tasks=80", "66 token-pair tasks"),
])
def test_bad_adaptation_settings_are_input_errors(setting, needle):
    from imcsim.errors import InputError

    with pytest.raises(InputError, match=re.escape(needle)) as err:
        load_config(ROOT / "configs" / "reram_lora_bert_mini_cost.yaml", [setting])
    assert "workload" in str(err.value)
    assert "\n" not in str(err.value)


def _adapted(method: str, **card):
    """A tiny transformer with ``method``'s adapters (over a random pool when it asks for one) and two heads."""
    import torch

    from imcsim.registry import METHODS
    from imcsim.workloads.trainer import trained_parameters
    from imcsim.workloads.transformer import TinyTransformer, attach_lora, lora_state

    torch.manual_seed(0)
    impl = METHODS[method]
    from imcsim.workloads.adaptation import LoRAFusionSpec

    card = SimpleNamespace(adapters=SimpleNamespace(targets=["q", "v"], rank=2, pool_size=3),
                           **{"lorafusion": LoRAFusionSpec(), **card})
    model = TinyTransformer(12, 8, 2, 1, 16, 6, 4)
    pool = []
    for _ in range(impl.pool_size(card)):
        member = TinyTransformer(12, 8, 2, 1, 16, 6, 4)
        for a in attach_lora(member, ["q", "v"], 2):
            torch.nn.init.normal_(a.lora_B.weight)
        pool.append(lora_state(member))
    adapters = impl.attach(card, model, pool)
    for task in ("a", "b"):
        model.add_head(task, 2)
    trained_parameters(model, impl)
    return impl, card, model, adapters


def test_lora_trains_a_and_b_and_starts_each_task_afresh():
    import torch

    impl, card, model, adapters = _adapted("lora", adapter_memory="reram")
    trains = {n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("heads.")}
    assert trains
    assert all(n.endswith((".lora_A.weight", ".lora_B.weight")) for n in trains)
    assert impl.digital_layers(card, adapters) == []  # in ReRAM: stored in the array
    sram = impl.digital_layers(SimpleNamespace(adapter_memory="sram"), adapters)
    assert {m.name for m in sram} == {f"enc.0.attn.{p}.lora_{x}" for p in "qv" for x in "AB"}
    with torch.no_grad():
        adapters[0].lora_B.weight.fill_(1.0)
    impl.start_task(model, adapters)
    assert all(not a.lora_B.weight.any() for a in adapters)  # a fresh adapter in the same slot
    assert impl.task_state(model) == {}  # earlier tasks see the latest adapter


def test_lorafusion_keeps_coefficients_per_task_and_counts_its_fusion_digitally():
    import torch

    from imcsim.api import build_hardware

    impl, _card, model, adapters = _adapted("lorafusion")
    trains = {n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("heads.")}
    assert trains == {"enc.0.attn.q.coef.w", "enc.0.attn.q.magnitude", "enc.0.attn.v.magnitude"}  # coef shared
    with torch.no_grad():
        adapters[0].coef.w.fill_(0.5)
    state = impl.task_state(model)
    assert set(state) == {f"enc.0.attn.{p}.{k}" for p in "qv" for k in ("coef.w", "magnitude")}
    impl.start_task(model, adapters)
    # the reference's Xavier draw over the pool_size x blocks matrix (3 x 1): b = sqrt(6 / 4)
    w = adapters[0].coef.w
    assert w.abs().min() > 0
    assert w.abs().max() <= (6 / 4) ** 0.5
    for a in adapters:  # magnitudes: the merged weight's row norms, so the task starts at W0 + dW
        merged = a.base.weight + a.delta_weight()
        torch.testing.assert_close(a.magnitude, merged.norm(dim=1))
        torch.testing.assert_close(a.fused_weight(), merged)
    macro = build_hardware(load_config(ROOT / "configs" / "reram_lora.yaml")).macro
    ops = impl.step_ops(macro, adapters, rows=12, samples=2)
    assert {op.module for op in ops} == {"enc.0.attn.q", "enc.0.attn.v"}
    assert {op.kind for op in ops} == {"digital"}
    assert {op.phase for op in ops} == {"forward", "input_grad", "weight_grad"}
    # the coefficient gradient through the merged adapters: rows x r x (k + d) outer products and N x r x (k + d)
    # inner products per adapted linear (d = k = 8, r = 2, N = 3, 12 rows)
    grad = [op for op in ops if op.phase == "weight_grad"]
    assert {op.layer for op in grad} == {"enc.0.attn.q.coef_grad", "enc.0.attn.v.coef_grad"}
    assert sum(op.counts[("digital", "mac_int8")] for op in grad) == 2 * (12 * 2 * 16 + 3 * 2 * 16)


@pytest.mark.slow
def test_lora_update_policies_write_less_than_every_step_and_commit_at_task_end():
    """Threshold and periodic policies keep accumulating in the SRAM master and write less; at the end of each
    task every pending change is committed, so the array holds the task's trained weights when it is tested.

    Tasks of 19 steps (600 samples): in a task of 3 the commit at its end outweighs what the policy saved (the
    first step, rewriting the fresh adapter, is the same under every policy)."""

    longer = ["workload.train.epochs=1", "workload.train.samples=600"]
    every, _, _ = _update_writes(longer)
    period, periodic, _ = _update_writes([*longer, "workload.update_policy.kind=periodic",
                                          "workload.update_policy.period=3"])
    thresh, _, _ = _update_writes([*longer, "workload.update_policy.kind=threshold",
                                   "workload.update_policy.threshold=3"])
    assert sum(period.values()) < sum(every.values())
    assert sum(thresh.values()) < sum(every.values())
    # periodic: writes only at every third step of a task and at its last step (the commit)
    allowed, start = set(), 0
    for n in periodic.steps_per_task:
        allowed |= {start + s for s in range(n) if (s + 1) % 3 == 0} | {start + n - 1}
        start += n
    assert {s for s, pulses in period.items() if pulses} <= allowed


def test_threshold_sync_writes_only_codes_that_moved_enough():
    import numpy as np
    import torch

    from imcsim.api import build_hardware
    from imcsim.workloads.int8 import Hardware, IMCLinear, WritePolicy

    macro = build_hardware(load_config(ROOT / "configs" / "reram_lora.yaml")).macro
    hw = Hardware(macro, write_policy=WritePolicy("threshold", threshold=2))
    layer = IMCLinear(8, 4, name="l", bias=False)
    layer.deploy(hw)
    before = macro.stored["l"].values.copy()
    with torch.no_grad():
        step = torch.zeros_like(layer.weight)
        step[0, 0], step[1, 1] = 1 * layer.w_scale, 3 * layer.w_scale  # one LSB and three LSB
        layer.weight += step
    layer.sync()
    after = macro.stored["l"].values
    diff = after.astype(int) - before.astype(int)
    assert diff[1, 1] == 3  # K x N: weight[1, 1] is stored at [1, 1]
    assert diff[0, 0] == 0  # below the threshold: kept in the master only
    layer.sync(commit=True)
    assert macro.stored["l"].values[0, 0] - before[0, 0] == 1
    assert np.count_nonzero(macro.stored["l"].values != before) == 2


def test_tasks_happen_over_time_and_a_refresh_is_counted():
    """With a task interval the array relaxes between tasks: the per-task table says when each task trained; a
    refresh threshold above any accuracy re-verifies the array after every task, and its pulses are counted."""
    refreshed = report("reram_lorafusion.yaml", "workload.train.epochs=1", "workload.task_interval=86400 s",
                       "workload.refresh_below=1.0")
    assert [row["time_s"] for row in refreshed.tables["per_task"]] == [0.0, 86400.0]
    assert refreshed.metrics["array_refreshes"] == 2  # without a refresh LoRAFusion writes nothing per task
    assert refreshed.metrics["write_pulses"] > 0  # cells that relaxed out of their window are reprogrammed


@pytest.mark.slow
def test_cost_only_activity_comes_from_a_functional_run_at_d_model_128():
    """The cost-only cards' activity (lora_tiny_multitask and lora_flan_t5_large) is the activity table of the
    functional LoRA run of the card widened to d_model 128, 4 layers: rerunning it reproduces them (about 5 min)."""

    from imcsim.config import _read_card

    r = run(load_config(ROOT / "configs" / "reram_lora.yaml", [
        "workload.model.d_model=128", "workload.model.n_layers=4", "workload.model.n_heads=4",
        "workload.model.d_ff=256", "circuit.array.n_subarrays=2048"]))
    measured = r.tables["activity"]
    for card in ("lora_tiny_multitask", "lora_flan_t5_large"):
        body, _ = _read_card(ROOT / "workloads" / f"{card}.yaml", "workload")
        shipped = body["cost_only"]["activity"]
        assert shipped["weight_change_fraction"] == pytest.approx(measured["weight_change_fraction"], abs=0.02)
        for kind, value in shipped["weight_change_by_layer"].items():
            assert value == pytest.approx(measured["weight_change_by_layer"][kind], abs=0.02)
        assert shipped["forward_plane_density"] == pytest.approx(measured["forward_plane_density"], abs=0.02)


def test_cost_only_periodic_policy_writes_a_period_fraction_per_step():
    """Cost-only, a periodic policy writes every ``period`` steps: per counted step a code changes 1 / period as
    often (the card's fraction is one write's), so pulses and programming energy fall about period-fold."""
    from imcsim.workloads.adaptation import _per_step_activity

    every = cost_report("reram_lora_bert_mini_cost.yaml")
    periodic = cost_report("reram_lora_bert_mini_cost.yaml", "workload.update_policy.kind=periodic",
                           "workload.update_policy.period=4")
    ratio = every.metrics["write_pulses"] / periodic.metrics["write_pulses"]
    assert 3.0 < ratio < 5.0
    card = load_config(ROOT / "configs" / "reram_lora_bert_mini_cost.yaml",
                       ["workload.update_policy.kind=periodic", "workload.update_policy.period=4"]).config.workload
    a = _per_step_activity(card)
    assert a.weight_change_fraction == pytest.approx(card.cost_only.activity.weight_change_fraction / 4)
    assert a.change_fraction("blocks.0.attn.q.lora_B") == pytest.approx(
        card.cost_only.activity.change_fraction("blocks.0.attn.q.lora_B") / 4)


@pytest.mark.slow
def test_weibull_cells_make_the_weakest_cell_set_the_lifetime():
    """With a Weibull endurance (device.endurance_shape) the lifetime is the array's median first failure over
    every written cell's wear: shorter than the hottest cell against the median endurance, and equal to the
    Weibull formula over the run's per-cell wear rates."""
    alike = report("reram_lora.yaml", "workload.train.epochs=1")
    weibull = report("reram_lora.yaml", "workload.train.epochs=1", "device.endurance_shape=2")
    assert weibull.metrics["lifetime_steps"] < alike.metrics["lifetime_steps"]
    assert weibull.metrics["write_pulses"] == alike.metrics["write_pulses"]  # the same run, only its wear-out differs


def test_lorafusion_zero_coefficients_never_move_and_the_ablation_trains_magnitudes_only():
    """At zero the merged update is bilinear in the coefficients, so their gradient is exactly zero (what
    ``coefficient_init: zero`` means); from the reference's Xavier draw they get a gradient. With
    ``train_coefficients: false`` only the magnitudes are trained parameters."""
    import torch
    import torch.nn.functional as F

    from imcsim.workloads.adaptation import LoRAFusionSpec

    x = torch.randint(0, 12, (4, 6), generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 1, 0])
    grads = {}
    for init in ("zero", "xavier_uniform"):
        impl, _card, model, adapters = _adapted("lorafusion", lorafusion=LoRAFusionSpec(coefficient_init=init))
        impl.start_task(model, adapters)
        F.cross_entropy(model(x, "a"), y).backward()
        grads[init] = adapters[0].coef.w.grad
    assert torch.equal(grads["zero"], torch.zeros(3))
    assert grads["xavier_uniform"].abs().min() > 0
    impl, _card, model, adapters = _adapted("lorafusion", lorafusion=LoRAFusionSpec(train_coefficients=False))
    trains = {n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("heads.")}
    assert trains == {"enc.0.attn.q.magnitude", "enc.0.attn.v.magnitude"}


def test_a_stacked_pool_takes_fewer_crossbars_and_counts_the_same_in_both_modes():
    """BERT-mini cost-only: the stacked pool takes a quarter of the separate pool's crossbars (each adapter's r
    rows no longer take crossbars of their own) and costs less per step; a functional run of the stacked layout
    reports its analog error."""
    sep = cost_report("reram_lorafusion_bert_mini_cost.yaml")
    st = cost_report("reram_lorafusion_bert_mini_cost.yaml", "workload.lorafusion.layout=stacked")

    def pool(r):
        return sum(x["subarrays"] for x in r.tables["layers"] if ".pool" in x["module"])

    assert pool(st) * 4 == pool(sep)
    assert st.metrics["energy_train_j"] < sep.metrics["energy_train_j"]
    assert st.metrics["memory_activations_kept_bytes"] == pytest.approx(sep.metrics["memory_activations_kept_bytes"],
                                                                      rel=1e-5)  # + the held coefficients
    fun = report("reram_lorafusion.yaml", "workload.train.epochs=1", "workload.lorafusion.layout=stacked")
    assert 0 < fun.metrics["analog_error_relative_rms"] < 1  # 0.50 here, as the separate layout (0.50)
    assert {x["module"] for x in fun.tables["layers"]} >= {"enc.0.attn.q.pool.A", "enc.0.attn.q.pool.B"}
