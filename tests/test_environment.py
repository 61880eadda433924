"""Numbers that hold on any machine: pinned threads and deterministic kernels, the environment in every
report, reruns that reproduce byte for byte, and dependency bounds that are all tested."""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import numba
import pytest
import torch

from imcsim.config import load_config
from imcsim.environment import RECORDED_PACKAGES, available_cores, environment, pinned

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "golden"))
from regenerate import smoke_settings  # noqa: E402
from test_cli import cli, imcsim  # noqa: E402

REQUIREMENT = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$")


def _requirements() -> dict[str, str]:
    """Every dependency of the project and its extras: name -> version specifier."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = {}
    for req in [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]:
        name, _extra, spec = REQUIREMENT.match(req).groups()
        found[name.lower()] = spec.replace(" ", "")
    return found


def _lowest() -> dict[str, str]:
    lines = (ROOT / "constraints" / "lowest.txt").read_text().splitlines()
    return dict(line.lower().split("==") for line in lines if line and not line.startswith("#"))


def test_every_dependency_has_a_lower_bound_and_an_upper_one_at_a_major_release():
    """``>=LOW,<MAJOR``: the upper bound is the next major release after the newest one tested (a year for a
    calendar-versioned package), so a user's install never meets a release whose breaking changes were not
    tested; 0.x releases stop below 1."""
    for name, spec in _requirements().items():
        if spec.startswith("=="):  # torch: the CPU wheel; ruff: the lint test's rule set
            continue
        lower = re.search(r">=([\d.]+)", spec)
        upper = re.fullmatch(r".*<(\d+)(\.0)?", spec)
        assert lower, (name, spec)
        assert upper, (name, spec)
        assert int(upper.group(1)) > int(lower.group(1).split(".")[0]), (name, spec)


def test_the_lowest_constraints_pin_each_lower_bound():
    """constraints/lowest.txt (CI's second job) installs exactly the lowest release each bound allows."""
    lowest = _lowest()
    for name, spec in _requirements().items():
        lower = re.search(r"(?:>=|==)([\d.]+)", spec).group(1)
        assert name in lowest, name
        pinned_version = [int(x) for x in lowest[name].split(".")]
        wanted = [int(x) for x in lower.split(".")]
        assert pinned_version[:len(wanted)] == wanted, (name, lowest[name])
        assert not any(pinned_version[len(wanted):]), (name, lowest[name])


def test_ci_installs_into_a_new_environment_without_a_cache_for_both_jobs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m venv" in ci
    assert "PIP_NO_CACHE_DIR=1" in ci
    assert "job lowest constraints/lowest.txt" in ci
    assert "job newest" in ci


@pytest.mark.parametrize("threads", ["0", "-1", str(available_cores() + 1), "1.5", "two"])
def test_run_threads_outside_the_machines_cores_is_refused_naming_the_key(threads, tmp_path):
    res = cli("validate", "configs/sas_mram_repnet_mobilenetv2_cost.yaml", "--set", f"run.threads={threads}")
    assert res.returncode == 2, res.stderr
    assert "run.threads" in res.stderr
    assert threads in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_shipped_configs_train_on_the_cpu_on_one_thread():
    for config in CONFIGS:
        run = load_config(config).config.run
        assert run.torch_device == "cpu", config.name
        assert run.threads == 1, config.name


def test_pinned_sets_threads_and_deterministic_kernels_and_puts_the_callers_back():
    before = (torch.get_num_threads(), numba.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    with pinned(1):
        assert torch.get_num_threads() == 1
        assert numba.get_num_threads() == 1
        assert torch.are_deterministic_algorithms_enabled()
        from threadpoolctl import threadpool_info

        assert all(p["num_threads"] == 1 for p in threadpool_info())
    assert (torch.get_num_threads(), numba.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before


def test_environment_names_the_software_and_the_machine():
    env = environment(1, "cpu")
    assert set(env) == {"python", *RECORDED_PACKAGES, "threads", "device", "cpu", "platform"}
    assert env["torch"] == torch.__version__
    assert env["numba"] == numba.__version__
    assert env["threads"] == 1


def _run_twice(config: str, sets: list[str], tmp_path: Path) -> tuple[bytes, bytes]:
    """The files of a run in a fresh process and of a second run in this one (whose caches earlier tests may
    have filled): as two users' runs, they must agree byte for byte."""
    args = [x for s in sets for x in ("--set", s)]
    outs = [tmp_path / "out0", tmp_path / "out1"]
    for run, out in zip((imcsim, cli), outs, strict=True):
        res = run("run", config, "--quiet", "--out", str(out), *args)
        assert res.returncode == 0, res.stderr
    for name in ("counts.csv", "layers.csv", "summary.txt"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    return (outs[0] / "report.json").read_bytes(), (outs[1] / "report.json").read_bytes()


@pytest.mark.parametrize(("config", "sets"), [
    ("configs/reram_lora.yaml", smoke_settings(ROOT / "configs/reram_lora.yaml")),
    ("configs/reram_lora_bert_mini_cost.yaml", []),
], ids=["functional", "cost_only"])
def test_a_second_run_writes_the_same_bytes(config, sets, tmp_path):
    first, second = _run_twice(config, sets, tmp_path)
    assert first == second
    report = json.loads(first)
    assert report["environment"] == environment(1, "cpu")


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_reruns_byte_for_byte(config, tmp_path):
    first, second = _run_twice(str(config), smoke_settings(config), tmp_path)
    assert first == second


def test_a_golden_from_another_torch_major_is_a_reported_skip_not_a_pass():
    from regenerate import golden_comparable, golden_tolerance

    env = environment(1, "cpu")
    assert golden_comparable(env, env) is None
    reason = golden_comparable({**env, "torch": "1.13.1"}, env)
    assert "torch 1.13.1" in reason
    assert "not comparable" in reason
    cost_only = {"mode": "cost_only", "metrics": {"energy_train_j": 1.0}}
    assert golden_tolerance(cost_only, "energy_train_j") == 1e-12
    functional = {"mode": "functional", "tolerance_rel": {"energy_train_j": 0.0, "lifetime_years": 0.03}}
    assert golden_tolerance(functional, "energy_train_j") == 1e-12  # never moved: compared exactly
    assert golden_tolerance(functional, "lifetime_years") == 0.03


def test_every_functional_golden_carries_its_measured_spread_and_the_environments_it_spans():
    for path in sorted((ROOT / "tests" / "golden").glob("*.json")):
        golden = json.loads(path.read_text())
        assert set(golden["environment"]) == set(environment(1, "cpu")), path.name
        if golden["mode"] == "functional":
            assert golden["tolerance_rel"].keys() == golden["metrics"].keys(), path.name
            spans = golden["tolerance_measured_over"]
            assert len({json.dumps(s["environment"], sort_keys=True) for s in spans}) >= 2, path.name
            assert all(s["threads"] == [1, 2, 4] for s in spans), path.name
        else:
            assert "tolerance_rel" not in golden, path.name
