"""Parameter sweeps: many runs of one config over any of its keys, streamed to a table on disk.

A sweep is a config, fixed overrides, and axes over config keys:

* ``--grid key=v1,v2,...``: the listed values (any type the key takes, units included);
* ``--range key=start:stop:n[:log]``: ``n`` values from ``start`` to ``stop``, evenly
  or log spaced; ``start`` and ``stop`` may carry the same unit (``1ns:10ns:5:log``).

The points are the product of the axes, or with ``--random N`` N points drawn from
them (a grid axis picks one of its values, a range axis draws uniformly, in log
space for ``log``), seeded by ``--sample-seed``.

Output folder (``--out``): ``sweep.json`` (the sweep's definition and its points),
``results.csv`` (one row per finished point, appended and flushed as each point
ends: the point's index, status, one-line error, swept values, run time and every
headline metric), ``results.parquet`` (the same table, rewritten atomically as
points finish) and, at the end, the plots. ``--resume`` continues a sweep whose
folder holds the same definition: points already in ``results.csv`` (finished or
failed) are not run again, and a row cut short by an interruption is dropped and
its point re-run. A failing point is recorded with its error and the sweep goes on.

Points run in local worker processes (``--workers N``) or on a Dask distributed
cluster (``--scheduler ADDRESS``; its workers need imcsim installed and the config
files at the same paths).

Stopping a sweep leaves no orphans. Ctrl-C (SIGINT) and SIGTERM stop it alike while
its points run: the points already finished stay in ``results.csv``, points not
started are cancelled, local workers still running a point are terminated, and
``imcsim sweep`` says to rerun with ``--resume`` and exits with 128 plus the signal's
number (130 for Ctrl-C, 143 for SIGTERM). Local workers ignore SIGINT (their sweep
stops them) and exit by themselves when their sweep's process dies, even by SIGKILL:
on Linux the kernel kills them (``PR_SET_PDEATHSIG``) when the pool was started from
the main thread, and in any case each worker checks about once a second that its
parent is alive and exits when it is not; multiprocessing's resource tracker then
exits as well, once no process holds its pipe.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from imcsim.errors import InputError
from imcsim.files import atomic_write, check_writable, mark_folder
from imcsim.metrics import SWEEP_METRICS

SWEEP_SCHEMA = 1
FIXED_COLUMNS = ("point", "status", "error", "seconds")
_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Axis:
    """One swept key: a grid of values, or a numeric range (``log``: log spaced)."""

    key: str
    values: tuple[str, ...] = ()
    start: float = 0.0
    stop: float = 0.0
    n: int = 0
    log: bool = False
    unit: str = ""

    @property
    def is_range(self) -> bool:
        return self.n > 0

    def grid(self) -> list[str]:
        if not self.is_range:
            return list(self.values)
        nums = np.geomspace(self.start, self.stop, self.n) if self.log else np.linspace(self.start, self.stop, self.n)
        return [_fmt(v, self.unit) for v in nums]

    def draw(self, rng: np.random.Generator) -> str:
        if not self.is_range:
            return self.values[int(rng.integers(len(self.values)))]
        if self.log:
            return _fmt(math.exp(rng.uniform(math.log(self.start), math.log(self.stop))), self.unit)
        return _fmt(rng.uniform(self.start, self.stop), self.unit)


def _fmt(v: float, unit: str) -> str:
    return f"{float(v):.6g}{unit}"


def parse_grid(spec: str) -> Axis:
    """``key=v1,v2,...`` -> a grid axis."""
    key, values = _split(spec, "--grid", "key=v1,v2,...")
    vals = tuple(v.strip() for v in _split_values(values))
    if not vals or any(not v for v in vals):
        raise InputError(f"--grid {spec}: give one or more comma-separated values, e.g. {key}=1,2,4", key="--grid")
    return Axis(key, values=vals)


def _split_values(values: str) -> list[str]:
    """Commas split values except inside brackets or braces (a value may be a YAML list or mapping)."""
    out, depth, cur = [], 0, ""
    for ch in values:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def parse_range(spec: str) -> Axis:
    """``key=start:stop:n[:log]`` -> a range axis (``start``/``stop`` may carry one unit)."""
    key, body = _split(spec, "--range", "key=start:stop:n[:log]")
    parts = body.split(":")
    hint = f"--range {spec}: expected {key}=start:stop:n[:log], e.g. {key}=1ns:10ns:5:log"
    if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3].strip() != "log"):
        raise InputError(hint, key="--range")
    ends = [_NUMBER.match(p) for p in parts[:2]]
    if not all(ends):
        raise InputError(f"{hint} (start and stop must be numbers)", key="--range")
    (a, ua), (b, ub) = (m.groups() for m in ends)
    if ua != ub and ua and ub:
        raise InputError(f"--range {spec}: start and stop carry different units ({ua!r}, {ub!r})", key="--range")
    try:
        n = int(parts[2])
    except ValueError:
        raise InputError(f"{hint} (n must be a whole number)", key="--range") from None
    if n < 1:
        raise InputError(f"{hint} (n must be at least 1)", key="--range")
    log = len(parts) == 4
    start, stop = float(a), float(b)
    if log and (start <= 0 or stop <= 0):
        raise InputError(f"--range {spec}: a log range needs positive start and stop", key="--range")
    return Axis(key, start=start, stop=stop, n=n, log=log, unit=ua or ub)


def _split(spec: str, option: str, form: str) -> tuple[str, str]:
    key, sep, value = spec.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise InputError(f"{option} {spec}: expected {form}", key=option)
    return key.strip(), value.strip()


def points_of(axes: list[Axis], random: int | None, seed: int) -> list[dict[str, str]]:
    """The sweep's points: the product of the axes, or ``random`` draws from them."""
    keys = [a.key for a in axes]
    if len(set(keys)) != len(keys):
        raise InputError(f"a key is swept twice: {', '.join(sorted(k for k in set(keys) if keys.count(k) > 1))}",
                         key="--grid/--range")
    if random is not None:
        rng = np.random.default_rng(seed)
        return [{a.key: a.draw(rng) for a in axes} for _ in range(random)]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(a.grid() for a in axes))]


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep runs; stored as ``sweep.json`` so that ``--resume`` can check it is the same sweep."""

    config: str
    overrides: list[str]
    axes: list[str]
    random: int | None
    sample_seed: int
    seed: int | None
    library: str | None
    points: list[dict[str, str]]
    schema: int = SWEEP_SCHEMA

    @property
    def keys(self) -> list[str]:
        return list(self.points[0]) if self.points else []

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]


def run_point(config: str, overrides: list[str], point: dict[str, str], seed: int | None,
              library: str | None) -> dict:
    """Run one point as ``imcsim run`` would (in a worker): its status, error, seconds and metrics."""
    import torch

    from imcsim.api import run
    from imcsim.config import load_config

    torch.set_num_threads(1)  # one core per worker: the sweep's parallelism is across points
    t0 = time.perf_counter()
    try:
        loaded = load_config(config, [*overrides, *(f"{k}={v}" for k, v in point.items())], seed=seed,
                             library=library)
        metrics = dict(run(loaded).metrics)
        status, error = "ok", ""
    except InputError as err:
        metrics, status, error = {}, "error", str(err)
    except Exception as err:  # a point that breaks the model is recorded; the sweep goes on
        metrics, status, error = {}, "error", f"internal error: {type(err).__name__}: {err}"
    return {"status": status, "error": " ".join(error.split()), "seconds": round(time.perf_counter() - t0, 3),
            "metrics": {k: metrics[k] for k in SWEEP_METRICS if k in metrics}}


@dataclass
class ResultTable:
    """``results.csv`` (appended per point, flushed to disk) and ``results.parquet`` (rewritten atomically)."""

    folder: Path
    keys: list[str]
    rows: list[dict] = field(default_factory=list)
    _last_parquet: float = 0.0

    @property
    def columns(self) -> list[str]:
        return [*FIXED_COLUMNS, *self.keys, *SWEEP_METRICS]

    @property
    def csv_path(self) -> Path:
        return self.folder / "results.csv"

    @property
    def parquet_path(self) -> Path:
        return self.folder / "results.parquet"

    def load(self) -> None:
        """Read the rows already on disk; drop a last line an interruption cut short."""
        path = self.csv_path
        if not path.exists():
            return
        raw = path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            raw = raw[: raw.rfind(b"\n") + 1]
            atomic_write(path, raw)
        reader = csv.DictReader(io.StringIO(raw.decode("utf-8")))
        if reader.fieldnames is not None and list(reader.fieldnames) != self.columns:
            raise InputError(f"{path}: its columns differ from this sweep's; choose another --out", key="--out")
        self.rows = [_typed(r) for r in reader]

    def done(self) -> set[int]:
        return {int(r["point"]) for r in self.rows}

    def append(self, index: int, point: dict[str, str], result: dict) -> dict:
        row = {"point": index, "status": result["status"], "error": result["error"], "seconds": result["seconds"],
               **point, **result["metrics"]}
        new = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        with open(self.csv_path, "a", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({c: _cell(row.get(c)) for c in self.columns})
            f.flush()
            os.fsync(f.fileno())
        self.rows.append(_typed({c: _cell(row.get(c)) for c in self.columns}))
        return row

    def write_parquet(self, force: bool = False, every_s: float = 2.0) -> None:
        if not force and time.monotonic() - self._last_parquet < every_s:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = {c: [r.get(c) for r in self.rows] for c in self.columns}
        types = {c: (pa.string() if c in ("status", "error", *self.keys) else
                     pa.int64() if c == "point" else pa.float64()) for c in self.columns}
        table = pa.table({c: pa.array([_arrow(v, types[c]) for v in vals], type=types[c]) for c, vals in cols.items()})
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf)
        atomic_write(self.parquet_path, buf.getvalue().to_pybytes())
        self._last_parquet = time.monotonic()


def _arrow(v, typ):
    import pyarrow as pa

    if v is None or v == "":
        return None
    if typ == pa.string():
        return str(v)
    if typ == pa.int64():
        return int(v)
    return float(v)


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _typed(row: dict) -> dict:
    """A CSV row with numbers as numbers (swept values stay text, as given)."""
    out = {}
    for k, v in row.items():
        if k in ("status", "error") or v in ("", None):
            out[k] = v
            continue
        try:
            out[k] = int(v) if k == "point" else float(v)
        except ValueError:
            out[k] = v
    return out


def prepare(spec: SweepSpec, out: Path, resume: bool) -> ResultTable:
    """Create or reopen the sweep folder; return its table with the rows already done."""
    definition = out / "sweep.json"
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} is a file; give a folder", key="--out")
    if definition.exists():
        if not resume:
            raise InputError(f"--out: {out} already holds a sweep; pass --resume to continue it or choose another "
                             "folder", key="--out")
        try:
            old = SweepSpec(**json.loads(definition.read_text()))
        except (TypeError, ValueError) as err:
            raise InputError(f"{definition}: not a sweep definition ({err})", key="--out") from None
        if old.to_json() != spec.to_json():
            raise InputError(f"--resume: {definition} defines another sweep (config, overrides, axes or points "
                             "differ); rerun with the same arguments or choose another --out", key="--resume")
    elif out.exists() and any(out.iterdir()):
        raise InputError(f"--out: {out} exists and holds no sweep; choose an empty or new folder", key="--out")
    check_writable(out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    mark_folder(out)
    if not definition.exists():
        atomic_write(definition, spec.to_json().encode())
    table = ResultTable(out, spec.keys)
    table.load()
    return table


class SweepInterrupted(KeyboardInterrupt):
    """A sweep stopped by a signal (SIGINT or SIGTERM); ``signum`` is its number (exit with 128 + it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


class Executor:
    """Runs points and yields (index, result) as they finish."""

    def run(self, tasks: list[tuple[int, dict[str, str]]], spec: SweepSpec) -> Iterator[tuple[int, dict]]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop: cancel what has not started."""


_PR_SET_PDEATHSIG = 1  # prctl option, <linux/prctl.h>


def _exit_with_parent(parent: int, deathsig: bool) -> None:
    """Worker initializer: leave Ctrl-C to the sweep, and exit when the sweep's process ``parent`` dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if deathsig and sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL),
                                                    ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
        except (OSError, AttributeError):  # no prctl here: the watch below suffices
            pass

    def watch() -> None:  # a dead parent's children are adopted: the parent pid changes
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    if os.getppid() != parent:  # it died before the death signal was set
        os._exit(1)
    threading.Thread(target=watch, name="imcsim-parent-watch", daemon=True).start()


class LocalExecutor(Executor):
    """Local worker processes (spawned: each imports imcsim once and runs many points).

    The workers exit when this process dies. The kernel kills them (Linux) only when this executor is created
    on the main thread, since it ties a child's death signal to the thread that started it; run the executor
    from the thread that created it.
    """

    def __init__(self, workers: int):
        import multiprocessing

        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ.setdefault(var, "1")  # one core per worker process, read when a worker starts
        deathsig = threading.current_thread() is threading.main_thread()
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_exit_with_parent, initargs=(os.getpid(), deathsig))
        self.workers = workers
        self._pending: dict[Future, int] = {}

    def run(self, tasks, spec):
        pending = self._pending
        it = iter(tasks)

        def submit() -> bool:
            nxt = next(it, None)
            if nxt is None:
                return False
            index, point = nxt
            pending[self.pool.submit(run_point, spec.config, spec.overrides, point, spec.seed, spec.library)] = index
            return True

        for _ in range(2 * self.workers):  # keep every worker busy without queueing the whole sweep
            if not submit():
                break
        while pending:
            # a timeout, so that a signal caught by another thread still reaches the main one soon
            finished, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for fut in finished:
                index = pending.pop(fut)
                yield index, fut.result()
                submit()

    def close(self) -> None:
        """Stop: cancel what has not started; terminate workers still running points (an interrupted sweep)."""
        busy = any(not fut.done() for fut in self._pending)
        processes = list((self.pool._processes or {}).values())  # shutdown never stops a running point
        self.pool.shutdown(wait=not busy, cancel_futures=True)
        if not busy:
            return
        for proc in processes:
            if proc.is_alive():
                proc.terminate()
        for proc in processes:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)


class DaskExecutor(Executor):
    """Points as tasks on a Dask distributed cluster."""

    def __init__(self, address: str):
        try:
            from distributed import Client
        except ImportError:
            raise InputError("--scheduler needs Dask: pip install 'imcsim[dask]'", key="--scheduler") from None
        try:
            self.client = Client(address, timeout="10s")
        except (OSError, TimeoutError) as err:
            raise InputError(f"--scheduler: cannot reach a Dask scheduler at {address} ({err})",
                             key="--scheduler") from None

    def run(self, tasks, spec):
        from distributed import as_completed

        futures = {self.client.submit(run_point, spec.config, spec.overrides, point, spec.seed, spec.library,
                                      pure=False, key=f"imcsim-point-{spec.digest}-{index}"): index
                   for index, point in tasks}
        self._futures = list(futures)
        for fut in as_completed(futures):
            yield futures[fut], fut.result()

    def close(self) -> None:
        for fut in getattr(self, "_futures", []):
            fut.cancel()
        self.client.close()


class _StopOnSignals:
    """While a sweep runs (on the main thread): SIGINT and SIGTERM stop it with :class:`SweepInterrupted`.

    The exception is raised at once while the sweep waits for points, else when it next waits, so a row is
    never cut short; later signals are ignored while the sweep stops. The previous handlers come back after.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.waiting = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                previous = signal.getsignal(sig)
                if previous not in (signal.SIG_IGN, None):  # a signal this process was told to ignore stays so
                    self._previous[sig] = signal.signal(sig, self._caught)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def _caught(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum
            if self.waiting:
                raise SweepInterrupted(signum)

    def check(self) -> None:
        if self.signum is not None:
            raise SweepInterrupted(self.signum)

    def each(self, results: Iterator[tuple[int, dict]]) -> Iterator[tuple[int, dict]]:
        """The items of ``results``; a signal while waiting for the next one stops at once."""
        while True:
            self.waiting = True
            try:
                self.check()
                item = next(results, None)
            finally:
                self.waiting = False
            if item is None:
                return
            yield item


def run_sweep(spec: SweepSpec, executor: Executor, table: ResultTable,
              on_point: Callable[[int, dict], None] | None = None) -> ResultTable:
    """Run the points of ``spec`` not yet in ``table``, appending each as it finishes.

    SIGINT (Ctrl-C) and SIGTERM stop it, run on the main thread, with :class:`SweepInterrupted` (a
    ``KeyboardInterrupt``): the finished points are in ``table``, the executor is closed (pending points
    cancelled, local workers terminated) and the signal handlers from before are restored.
    """
    done = table.done()
    todo = [(i, p) for i, p in enumerate(spec.points) if i not in done]
    with _StopOnSignals() as stop:
        try:
            for index, result in stop.each(executor.run(todo, spec)):
                row = table.append(index, spec.points[index], result)
                table.write_parquet()
                if on_point is not None:
                    on_point(index, row)
        except Exception as err:  # e.g. workers killed by the same signal sent to the whole process group
            if stop.signum is None:
                raise
            raise SweepInterrupted(stop.signum) from err
        finally:
            executor.close()
            if table.rows:
                table.write_parquet(force=True)
        stop.check()  # a signal that came while the last point was saved still stops the command
    return table


def write_plots(table: ResultTable, axes: list[Axis], metric: str, pareto: tuple[str, str], out: Path) -> list[str]:
    """Write ``METRIC_vs_KEY.png`` per swept key and ``pareto.png`` of the finished points; return the names."""
    from imcsim import plots

    def finished(*metrics: str) -> list[dict]:
        return [r for r in table.rows if r["status"] == "ok" and all(r.get(m) not in (None, "") for m in metrics)]

    written = []
    rows = finished(metric)
    if rows:
        y = np.array([float(r[metric]) for r in rows])
        for axis in axes:
            values = [r[axis.key] for r in rows]
            other = next((a.key for a in axes if a.key != axis.key), None)  # a 2-D sweep: one series per value
            unit = value_unit(values)
            name = f"{metric}_vs_{axis.key}.png"
            atomic_write(out / name, plots.plot_metric_vs_param(
                values, numeric(values), y, f"{axis.key} ({unit})" if unit else axis.key, metric, log_x=axis.log,
                groups=[r[other] for r in rows] if other else None, group_key=other or ""))
            written.append(name)
    mx, my = pareto
    pts = finished(mx, my)
    if pts:
        x = np.array([float(r[mx]) for r in pts])
        y = np.array([float(r[my]) for r in pts])
        labels = [", ".join(str(r[a.key]) for a in axes) for r in pts]
        atomic_write(out / "pareto.png", plots.plot_pareto(x, y, mx, my, labels))
        written.append("pareto.png")
    return written


def value_unit(values: Iterable) -> str:
    """The unit every one of ``values`` is written in ('1ns', '2 ns' -> 'ns'); '' when none or they differ."""
    units = set()
    for v in values:
        m = _NUMBER.match(str(v))
        if m is None:
            return ""
        units.add(m.group(2))
    return units.pop() if len(units) == 1 else ""


def numeric(values: Iterable) -> np.ndarray | None:
    """Values as numbers (a unit suffix dropped), or None when some are not numbers."""
    out = []
    for v in values:
        m = _NUMBER.match(str(v))
        if m is None:
            return None
        out.append(float(m.group(1)))
    return np.array(out)


__all__ = ["Axis", "DaskExecutor", "LocalExecutor", "ResultTable", "SweepInterrupted",
           "SweepSpec", "parse_grid", "parse_range", "points_of", "prepare", "run_point", "run_sweep", "write_plots"]
