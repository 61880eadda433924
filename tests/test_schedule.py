"""Event schedule: a hand-computed case, bounds, energy conservation, compiled engine = simpy oracle = replay,
determinism, and simpy kept off the run path."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imcsim.actions import ActionCost, ActionSpec, ActionTable
from imcsim.ops import OpRecord
from imcsim.sim.chrome import chrome_trace
from imcsim.sim.engine import compile_graph, retime, simulate
from imcsim.sim.graph import (
    WRITE_DRIVERS,
    MacroView,
    Resources,
    Segment,
    Task,
    TaskGraph,
    build_step_graph,
    critical_path_bound,
    op_energy_j,
)
from imcsim.sim.oracle import simulate_simpy
from imcsim.sim.replay import Scheduler
from imcsim.workloads.dataflow import LayerCall, LayerGraph

T_CYCLE = 1e-9
ACTIONS = ActionTable({
    ("cell", "set_pulse"): ActionSpec(ActionCost(2e-12, 1e-9), "one pulse of 1 ns", "write_pulse"),
    ("cell", "read"): ActionSpec(ActionCost(1e-13, 0.0), "read", "read"),
    ("input_buffer", "read_bit"): ActionSpec(ActionCost(1e-14, 0.0), "bit", "transfer"),
    ("output_buffer", "write_bit"): ActionSpec(ActionCost(1e-14, 0.0), "bit", "transfer"),
    ("digital", "mac_int8"): ActionSpec(ActionCost(3e-13, 0.0), "mac", "compute"),
})


def view(drivers: int = 1, ports: int = 1, bits_per_cycle: int = 1 << 20) -> MacroView:
    return MacroView(actions=ACTIONS, device_components=frozenset({"cell"}), t_cycle_s=T_CYCLE, subarrays={"L1": 1, "L2": 1},
                     drivers_per_subarray=1, write_drivers=drivers, scratch_subarrays=1, buffer_ports=ports,
                     buffer_bits_per_cycle=bits_per_cycle)


def gemm(phase: str, layer: str, chunks: list[int], reads: int = 0, bits: int = 0) -> OpRecord:
    counts = Counter({("cell", "read"): reads}) if reads else Counter()
    if bits:
        counts[("input_buffer", "read_bit")] = bits
        counts[("output_buffer", "write_bit")] = bits
    return OpRecord(phase=phase, layer=layer, kind="gemm", counts=counts, cycles=sum(chunks), module=layer, step=0,
                    chunk_cycles=np.array(chunks, dtype=np.int64))


def write(layer: str, pulses: int) -> OpRecord:
    return OpRecord(phase="update", layer=layer, kind="write", counts=Counter({("cell", "set_pulse"): pulses}),
                    module=layer, step=0)


TWO_LAYERS = LayerGraph([
    LayerCall("L1", m=2, k=4, n=4, groups=1, samples=2, trainable=True, producers=()),
    LayerCall("L2", m=2, k=4, n=4, groups=1, samples=2, trainable=True, producers=(("L1", False),)),
])


def two_layer_step() -> list[OpRecord]:
    return [gemm("forward", "L1", [10, 10]), gemm("forward", "L2", [5, 5]), gemm("input_grad", "L2", [4, 4]),
            write("L1", 12), write("L2", 12)]


def test_hand_computed_two_layers_two_subarrays_one_write_driver():
    # L1 forward: samples at 0-10, 10-20 (its subarray). L2 forward: 10-15, 20-25.
    # L2 input gradient (L2 is the loss layer): 15-19 and 25-29, sharing L2's subarray.
    # Write-back of L1 after its last read: 20-32 on the only driver; L2's write is
    # ready at 29 but waits for the driver: 32-44.
    sched = Scheduler(view(drivers=1)).schedule(two_layer_step(), TWO_LAYERS)
    assert sched.makespan == 44
    assert sched.critical_by_phase == {"forward": 20, "update": 24}
    assert sum(sched.critical_by_phase.values()) == sched.makespan
    # a second driver removes the contention: L2's write runs 29-41
    assert Scheduler(view(drivers=2)).schedule(two_layer_step(), TWO_LAYERS).makespan == 41
    # without contention the dependency chain alone is 10 + 5 + 4 + 12 = 31 (sample 1 path)
    assert critical_path_bound(build_step_graph(two_layer_step(), TWO_LAYERS, view())) == 31


def test_write_blocks_reads_of_the_same_subarray():
    # a read, a rewrite and another read of L1: all three hold L1's subarray in turn
    ops = [gemm("forward", "L1", [10]), write("L1", 6), gemm("forward", "L1", [3])]
    sched = Scheduler(view()).schedule(ops, None)
    spans = []
    k = 0
    for t in sched.graph.tasks:
        for seg in t.segments:
            if any(name == "array:L1" for name, _ in seg.resources):
                spans.append((int(sched.start[k]), int(sched.end[k])))
            k += 1
    spans.sort()
    assert len(spans) == 3
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    assert sched.makespan == 10 + 6 + 3


@st.composite
def random_steps(draw):
    n_layers = draw(st.integers(1, 4))
    samples = draw(st.integers(1, 4))
    calls, ops = [], []
    for i in range(n_layers):
        coupled = draw(st.booleans())
        producers = ((f"L{i - 1}", coupled),) if i else ()
        calls.append(LayerCall(f"L{i}", m=samples, k=4, n=4, groups=1, samples=samples, trainable=True,
                               producers=producers))
        ops.append(gemm("forward", f"L{i}", draw(st.lists(st.integers(0, 30), min_size=samples, max_size=samples)),
                        reads=draw(st.integers(0, 50)), bits=draw(st.integers(0, 4000))))
    for i in reversed(range(n_layers)):
        ops.append(gemm("input_grad", f"L{i}", draw(st.lists(st.integers(0, 30), min_size=samples,
                                                             max_size=samples)), bits=draw(st.integers(0, 4000))))
    for i in range(n_layers):
        ops.append(write(f"L{i}", draw(st.integers(0, 40))))
    subarrays = {f"L{i}": draw(st.integers(1, 3)) for i in range(n_layers)}
    v = MacroView(actions=ACTIONS, device_components=frozenset({"cell"}), t_cycle_s=T_CYCLE, subarrays=subarrays,
                  drivers_per_subarray=1, write_drivers=draw(st.integers(1, 4)), scratch_subarrays=1,
                  buffer_ports=draw(st.integers(1, 3)), buffer_bits_per_cycle=draw(st.sampled_from([64, 256, 1024])))
    return ops, LayerGraph(calls), v


@settings(max_examples=60, deadline=None)
@given(random_steps())
def test_schedule_properties(case):
    ops, layers, v = case
    graph = build_step_graph(ops, layers, v)
    order, events, simpy_start = simulate_simpy(graph)
    # the compiled engine processes the same events in the same order as simpy
    c_order, c_events, c_start = simulate(graph)
    assert (c_order, c_events) == (order, events)
    assert np.array_equal(c_start, simpy_start)
    sched = retime(graph, compile_graph(graph, order, events))
    # the replay along simpy's grant order reproduces simpy's times exactly
    assert np.array_equal(sched.start, simpy_start)
    # contention never beats the unlimited-resource bound, and never exceeds running everything serially
    assert sched.makespan >= critical_path_bound(graph)
    assert sched.makespan <= int(graph.durations.sum())
    # the critical path splits the latency by phase without loss
    assert sum(sched.critical_by_phase.values()) == sched.makespan
    # energy is conserved: tasks carry exactly the counted actions x per-action costs
    assert sched.graph.task_energy_j.sum() == pytest.approx(sum(op_energy_j(op, ACTIONS) for op in ops), rel=1e-12)
    # dependencies hold
    offsets = np.cumsum([0] + [len(t.segments) for t in graph.tasks])
    for i, t in enumerate(graph.tasks):
        for d in t.deps:
            assert sched.start[offsets[i]] >= sched.end[offsets[d + 1] - 1]
    # same input, same schedule
    again = Scheduler(v).schedule(ops, layers)
    assert np.array_equal(again.start, sched.start)
    assert again.makespan == sched.makespan


def test_replayed_signature_retimes_with_new_durations():
    scheduler = Scheduler(view())
    first = scheduler.schedule(two_layer_step(), TWO_LAYERS)
    slower = two_layer_step()
    slower[0] = slower[0].tagged(chunk_cycles=np.array([20, 20]))
    second = scheduler.schedule(slower, TWO_LAYERS)
    assert scheduler.simulated == 1
    assert scheduler.replayed == 1
    assert second.makespan > first.makespan
    graph = build_step_graph(slower, TWO_LAYERS, view())
    order, _, _ = simulate(graph)
    assert second.makespan == retime(graph, compile_graph(graph, order, 0)).makespan


def test_chrome_trace_has_one_complete_event_per_segment():
    sched = Scheduler(view()).schedule(two_layer_step(), TWO_LAYERS)
    trace = chrome_trace(sched, T_CYCLE, "test", power=[(0.0, 1.0)])
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(slices) == len(sched.start)
    assert max(e["ts"] + e["dur"] for e in slices) == pytest.approx(44 * T_CYCLE * 1e6)
    assert {e["cat"] for e in slices} == {"forward", "input_grad", "update"}
    assert any(e["ph"] == "C" for e in trace["traceEvents"])


@st.composite
def random_task_graphs(draw):
    """Arbitrary task graphs: slot resources of several capacities, a container pool taken in varied amounts,
    segments holding several resources, zero durations and ties."""
    capacity = {f"r{j}": draw(st.integers(1, 3)) for j in range(draw(st.integers(1, 4)))}
    capacity[WRITE_DRIVERS] = draw(st.integers(1, 4))
    names = sorted(capacity)
    tasks, durations = [], []
    for i in range(draw(st.integers(1, 14))):
        segments = []
        for _ in range(draw(st.integers(1, 3))):
            held = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
            resources = tuple((n, draw(st.integers(1, capacity[n])) if n == WRITE_DRIVERS else 1) for n in held)
            segments.append(Segment(resources, 0))
            durations.append(draw(st.integers(0, 6)))
        deps = sorted(set(draw(st.lists(st.integers(0, i - 1), max_size=3)))) if i else []
        tasks.append(Task(f"t{i}", "forward", "L", segments, deps, op=0))
    return TaskGraph(tasks, Resources(capacity), np.array(durations, dtype=np.int64), np.zeros(len(tasks)))


@settings(max_examples=300, deadline=None)
@given(random_task_graphs())
def test_compiled_engine_matches_simpy_event_for_event(graph):
    order, events, start = simulate_simpy(graph)
    c_order, c_events, c_start = simulate(graph)
    assert c_order == order
    assert c_events == events
    assert np.array_equal(c_start, start)


def test_the_run_path_does_not_import_simpy():
    code = "import sys, imcsim.api, imcsim.cli, imcsim.sim.chrome; print('simpy' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert res.stdout.strip() == "False"


def test_energy_profile_spreads_each_task_over_its_time_and_keeps_the_total():
    sched = Scheduler(view(drivers=1)).schedule(two_layer_step(), TWO_LAYERS)
    edges, energy = sched.energy_profile(11)
    assert len(edges) == 12
    assert edges[-1] == sched.makespan
    assert energy.min() >= 0
    assert energy.sum() == pytest.approx(float(np.sum(sched.graph.task_energy_j)), rel=1e-12)
    # the last bin holds only L2's write-back (32-44): its energy per cycle times the bin's width
    tasks = sched.graph.tasks
    write_l2 = next(i for i, t in enumerate(tasks) if t.phase == "update" and t.layer == "L2")
    per_cycle = sched.graph.task_energy_j[write_l2] / 12
    assert energy[-1] == pytest.approx(per_cycle * (edges[-1] - edges[-2]), rel=1e-9)
