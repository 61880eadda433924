"""imcsim sweep: axes, points, results equal single runs, resume, failing points, Dask, Pareto fronts."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imcsim.errors import InputError
from imcsim.metrics import SWEEP_METRICS
from imcsim.plots import pareto_front
from imcsim.sweep import Axis, parse_grid, parse_range, points_of

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "reram_lora_bert_mini_cost.yaml")
SMALL = ["workload.cost_only.model.d_model=32", "workload.cost_only.model.n_layers=1",
         "workload.cost_only.model.d_ff=64", "workload.cost_only.model.seq_len=16", "workload.cost_only.batch_size=2",
         "workload.cost_only.model.vocab=100", "circuit.array.n_subarrays=64"]
SETS = [arg for s in SMALL for arg in ("--set", s)]


def imcsim(*args: str, timeout: int = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imcsim.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=kw.get("cwd", ROOT), check=False)


def rows(folder: Path) -> list[dict]:
    with open(folder / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


# ---- axes and points -------------------------------------------------------------


def test_grid_and_range_parsing():
    assert parse_grid("device.write.t_set=2ns,3ns").values == ("2ns", "3ns")
    assert parse_grid("workload.baselines=[last_layer, full],[]").values == ("[last_layer, full]", "[]")
    a = parse_range("device.write.t_set=1ns:100ns:3:log")
    assert a.grid() == ["1ns", "10ns", "100ns"]
    assert parse_range("circuit.technology.vdd=0.8:1.0:3").grid() == ["0.8", "0.9", "1"]
    for bad in ("k=1:2", "k=1:2:x", "k=1ns:2V:3", "k=0:1:3:log", "k=1:2:3:lin", "k", "k=a:b:2"):
        with pytest.raises(InputError, match="--range"):
            parse_range(bad)
    with pytest.raises(InputError, match="--grid"):
        parse_grid("k=")


@given(st.floats(1e-3, 1e3), st.floats(1.5, 1e3), st.integers(2, 12), st.booleans())
@settings(max_examples=60, deadline=None)
def test_range_axis_spans_its_ends_in_order(start, factor, n, log):
    axis = Axis("k", start=start, stop=start * factor, n=n, log=log)
    vals = np.array([float(v) for v in axis.grid()])
    assert len(vals) == n
    assert vals[0] == pytest.approx(start, rel=1e-5)
    assert vals[-1] == pytest.approx(start * factor, rel=1e-5)
    assert np.all(np.diff(vals) > 0)
    steps = np.diff(np.log(vals)) if log else np.diff(vals)
    assert np.allclose(steps, steps[0], rtol=1e-3, atol=1e-9 * vals[-1])


@given(st.integers(1, 40), st.integers(0, 2**31))
@settings(max_examples=40, deadline=None)
def test_random_points_stay_inside_the_axes_and_repeat_with_the_seed(n, seed):
    axes = [parse_range("a=1ns:10ns:2:log"), parse_range("b=0.5:0.9:2"), parse_grid("c=x,y,z")]
    pts = points_of(axes, n, seed)
    assert pts == points_of(axes, n, seed)
    assert len(pts) == n
    for p in pts:
        assert 1 - 1e-5 <= float(p["a"][:-2]) <= 10 + 1e-5
        assert p["a"].endswith("ns")
        assert 0.5 - 1e-6 <= float(p["b"]) <= 0.9 + 1e-6
        assert p["c"] in ("x", "y", "z")


def test_product_of_axes_and_a_key_swept_twice():
    pts = points_of([parse_grid("a=1,2,3"), parse_range("b=1:2:2")], None, 0)
    assert pts == [{"a": a, "b": b} for a in ("1", "2", "3") for b in ("1", "2")]
    with pytest.raises(InputError, match="swept twice"):
        points_of([parse_grid("a=1"), parse_grid("a=2")], None, 0)


@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100)), min_size=1, max_size=40), st.booleans())
@settings(max_examples=60, deadline=None)
def test_pareto_front_points_are_undominated_and_cover_the_rest(pts, y_larger):
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    front = set(pareto_front(x, y, y_larger=y_larger).tolist())
    sy = -y if y_larger else y

    def dominates(j, i):
        return x[j] <= x[i] and sy[j] <= sy[i] and (x[j] < x[i] or sy[j] < sy[i])

    for i in range(len(x)):
        dominated = any(dominates(j, i) for j in range(len(x)))
        if i in front:
            assert not dominated
        elif not dominated:  # an undominated point off the front duplicates one on it
            assert any(x[j] == x[i] and y[j] == y[i] for j in front)


# ---- running sweeps ---------------------------------------------------------------------


def test_sweep_equals_single_runs_and_records_a_bad_point(tmp_path):
    out = tmp_path / "sw"
    res = imcsim("sweep", CONFIG, *SETS, "--grid", "device.set_pulse.voltage=1.2V,oops,1.6V", "--out", str(out),
                 "--workers", "2", "--quiet")
    assert res.returncode == 0, res.stderr
    got = sorted(rows(out), key=lambda r: int(r["point"]))
    assert [r["status"] for r in got] == ["ok", "error", "ok"]
    assert re.fullmatch(r"--set: device\.set_pulse\.voltage: .*oops.*", got[1]["error"])
    assert (out / "results.parquet").exists()
    assert (out / "pareto.png").exists()
    import pyarrow.parquet as pq

    table = pq.read_table(out / "results.parquet").to_pylist()
    assert sorted(r["point"] for r in table) == [0, 1, 2]
    # the same point run alone with `imcsim run` gives the same metrics
    single = tmp_path / "single"
    res = imcsim("run", CONFIG, *SETS, "--set", "device.set_pulse.voltage=1.6V", "--out", str(single), "--quiet")
    assert res.returncode == 0, res.stderr
    metrics = json.loads((single / "report.json").read_text())["metrics"]
    for key in SWEEP_METRICS:
        if key in metrics and isinstance(metrics[key], (int, float)):
            assert float(got[2][key]) == pytest.approx(metrics[key], rel=1e-12), key
    first = next(r for r in table if r["point"] == 0)
    assert first["energy_train_j"] != float(got[2]["energy_train_j"])  # the swept key changed the result


@pytest.mark.slow  # end to end, about 15 s: kept out of the default suite's 5 minutes
def test_interrupted_sweep_resumes_with_nothing_lost_or_repeated(tmp_path, capsys):
    out = tmp_path / "sw"
    def sweep_args(n: int) -> list[str]:
        return ["sweep", CONFIG, *SETS, "--range", f"circuit.technology.vdd=0.8:1.0:{n}", "--out", str(out),
                "--workers", "1", "--quiet"]

    args = sweep_args(6)
    proc = subprocess.Popen([sys.executable, "-m", "imcsim.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if (out / "results.csv").exists() and len(rows(out)) >= 2:
                break
            if proc.poll() is not None:
                pytest.fail(f"the sweep ended before it could be interrupted: {proc.stderr.read().decode()}")
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)  # as abrupt as a power cut: no clean-up runs
    finally:
        proc.wait()
    before = rows(out)
    assert 2 <= len(before) < 6
    with open(out / "results.csv", "a") as f:  # a row the interruption cut short
        f.write("5,ok,,1.0,0.9")
    # the same folder without --resume is refused and left as it is
    from imcsim.cli import main

    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    res = imcsim(*args, "--resume")
    assert res.returncode == 0, res.stderr
    after = rows(out)
    assert sorted(int(r["point"]) for r in after) == list(range(6))
    assert after[: len(before)] == before  # the rows written before the interruption are kept as they were
    assert all(r["status"] == "ok" for r in after)
    # resuming with other axes is refused
    assert main([*sweep_args(5), "--resume"]) == 2
    assert "another sweep" in capsys.readouterr().err
    assert rows(out) == after


def test_bad_sweep_arguments_exit_2_with_one_line(tmp_path, capsys):
    from imcsim.cli import main

    for extra in (["--grid", "no.such.key=1,2"], ["--range", "circuit.technology.vdd=1:2"], [],
                  ["--grid", "seed=1", "--pareto", "energy_train_j"], ["--grid", "seed=1", "--workers", "0"],
                  ["--grid", "seed=1", "--plot", "latency_forward_s"],
                  ["--grid", "seed=1", "--pareto", "energy_train_j,cells_written"]):
        code = main(["sweep", CONFIG, *extra, "--out", str(tmp_path / "x"), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2, (extra, err)
        assert err.startswith("imcsim: error: "), err
        assert err.count("\n") == 1, err
        assert not (tmp_path / "x").exists()
        if "_forward_s" in " ".join(extra) or "cells_written" in " ".join(extra):  # a former name: the new one
            assert "latency_train_forward_s" in err or "cells_ever_written" in err, err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_run_sweep_between_rows_and_the_handler_comes_back(tmp_path, signum):
    from imcsim.sweep import Executor, ResultTable, SweepInterrupted, SweepSpec, run_sweep

    class Signalling(Executor):
        closed = False

        def run(self, tasks, spec):
            for index, _ in tasks:
                if index == 1:  # while point 1 runs
                    os.kill(os.getpid(), signum)
                yield index, {"status": "ok", "error": "", "seconds": 0.0, "metrics": {}}

        def close(self):
            self.closed = True

    spec = SweepSpec(config="c.yaml", overrides=[], axes=["grid:k=0,1,2,3"], random=None, sample_seed=0, seed=None,
                     library=None, points=[{"k": str(i)} for i in range(4)])
    table, executor = ResultTable(tmp_path, spec.keys), Signalling()
    previous = signal.getsignal(signum)
    with pytest.raises(SweepInterrupted) as stopped:
        run_sweep(spec, executor, table)
    assert stopped.value.signum == signum
    assert isinstance(stopped.value, KeyboardInterrupt)
    assert executor.closed
    assert [r["point"] for r in table.rows] == [0]
    assert [r["point"] for r in rows(tmp_path)] == ["0"]
    assert signal.getsignal(signum) is previous


def _gone(proc) -> bool:
    """The process has exited (a zombie left unreaped by an init that does not reap counts as exited)."""
    import psutil

    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(procs: list, seconds: float) -> list:
    deadline = time.monotonic() + seconds
    while (alive := [p for p in procs if not _gone(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


_HOLD_WORKERS = """
import os, sys, threading, time
from pathlib import Path

from imcsim.sweep import LocalExecutor


def hold(folder):
    Path(folder, str(os.getpid())).touch()
    time.sleep(120)


def start():
    executor = LocalExecutor(2)
    for _ in range(2):
        executor.pool.submit(hold, sys.argv[1])
    time.sleep(120)


if __name__ == "__main__":
    if sys.argv[2] == "thread":  # a pool started off the main thread: no death signal, the workers watch
        worker = threading.Thread(target=start)
        worker.start()
        worker.join()
    else:
        start()
"""


@pytest.mark.parametrize("where", ["main", "thread"])
def test_workers_and_resource_tracker_exit_when_the_sweep_is_killed(tmp_path, where):
    psutil = pytest.importorskip("psutil")
    script, marks = tmp_path / "hold.py", tmp_path / "marks"
    script.write_text(_HOLD_WORKERS)
    marks.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), str(marks), where], cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(list(marks.iterdir())) < 2:  # both workers are running a point
            assert proc.poll() is None, "the stand-in sweep ended"
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.05)
        children = psutil.Process(proc.pid).children(recursive=True)
        workers = {int(m.name) for m in marks.iterdir()}
        assert workers <= {c.pid for c in children}
        assert any("resource_tracker" in " ".join(c.cmdline()) for c in children)
        proc.kill()  # SIGKILL: nothing runs in the sweep's process
        proc.wait()
        left = _wait_gone(children, 5)
        assert not left, [" ".join(c.cmdline()) for c in left]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the test left alive


@pytest.mark.slow  # end to end, about 15 s: kept out of the default suite's 5 minutes
def test_sigterm_stops_a_sweep_like_ctrl_c_and_resume_finishes_it(tmp_path):
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "sw"
    # points of about a quarter second: the sweep is still running when its first row is written
    small = ["workload.cost_only.model.n_layers=1", "workload.cost_only.model.d_model=128",
             "workload.cost_only.model.d_ff=512"]
    args = ["sweep", CONFIG, *(a for s in small for a in ("--set", s)), "--grid",
            "circuit.technology.vdd=0.8,0.85,0.9,0.95,1.0", "--out", str(out), "--workers", "1", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "imcsim.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "results.csv").exists() or not rows(out):
            if proc.poll() is not None:
                pytest.fail(f"the sweep ended before it could be stopped: {proc.stderr.read()}")
            assert time.monotonic() < deadline, "no point finished"
            time.sleep(0.02)
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 143, err
    assert "imcsim: interrupted;" in err, err
    assert "rerun with --resume to finish" in err, err
    assert "Traceback" not in err, err
    before = rows(out)
    assert 1 <= len(before) < 5
    assert not _wait_gone(children, 5)  # the worker and the resource tracker
    from imcsim.cli import main

    assert main([*args, "--resume"]) == 0
    after = rows(out)
    assert sorted(int(r["point"]) for r in after) == [0, 1, 2, 3, 4]  # every point exactly once
    assert after[: len(before)] == before
    assert all(r["status"] == "ok" for r in after)


def _start_dask(tmp_path: Path) -> tuple[list[subprocess.Popen], str]:
    pytest.importorskip("distributed")
    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)]
    deadline = time.monotonic() + 60
    while not sched_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    address = json.loads(sched_file.read_text())["address"]
    procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "2",
                                  "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT))
    return procs, address


@pytest.mark.slow  # starts a Dask scheduler and worker: about 25 s
def test_sweep_on_a_local_dask_cluster_matches_local_workers(tmp_path):
    procs, address = _start_dask(tmp_path)
    try:
        grid = ["--grid", "circuit.technology.vdd=0.8,1.0", "--grid", "device.set_pulse.voltage=1.2V,bad"]
        res = imcsim("sweep", CONFIG, *SETS, *grid, "--out", str(tmp_path / "dask"), "--scheduler", address,
                     "--quiet")
        assert res.returncode == 0, res.stderr
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    res = imcsim("sweep", CONFIG, *SETS, *grid, "--out", str(tmp_path / "local"), "--workers", "2", "--quiet")
    assert res.returncode == 0, res.stderr

    def table(name):
        return {int(r["point"]): {k: v for k, v in r.items() if k != "seconds"} for r in rows(tmp_path / name)}

    dask, local = table("dask"), table("local")
    assert dask == local
    assert sorted(r["status"] for r in dask.values()) == ["error", "error", "ok", "ok"]
    assert not math.isnan(float(dask[0]["energy_train_j"]))


def _readme_command(prefix: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [ln.split("#")[0].strip() for b in blocks for ln in b.splitlines()]
    return next(ln for ln in lines if ln.startswith(prefix)).split()


@pytest.mark.slow
def test_readme_sweep_command_as_written(tmp_path):
    cmd = _readme_command("imcsim sweep configs/")
    out = cmd.index("--out")
    cmd[out + 1] = str(tmp_path / "sweep")
    res = imcsim(*cmd[1:], "--quiet")
    assert res.returncode == 0, res.stderr
    got = rows(tmp_path / "sweep")
    assert len(got) == 12
    assert all(r["status"] == "ok" for r in got)
    assert len({r["energy_train_j"] for r in got}) == 12  # every point costs differently
    assert (tmp_path / "sweep" / "energy_train_j_vs_device.write.t_set.png").exists()


@pytest.mark.slow
def test_readme_cost_only_compare_command_as_written(tmp_path):
    cmd = _readme_command("imcsim compare configs/reram_lora_bert_mini_cost.yaml")
    res = imcsim(*cmd[1:], "--out", str(tmp_path / "cmp"), "--quiet")
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    lora, fusion = (data["metrics"][name] for name in data["runs"])
    assert lora["write_pulses"] > 0
    assert fusion["write_pulses"] == 0
    assert any("write pulses: breaks even after" in line for line in data["break_even"])
