"""Kinds and methods register once, in registries; other packages add them through entry points."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imcsim.registry import DEVICES, METHODS, REGISTRIES

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "tests" / "plugins" / "imcsim_demo_plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The demo plug-in package, installed with pip into a folder of its own."""
    source = tmp_path_factory.mktemp("plugin") / PLUGIN.name
    shutil.copytree(PLUGIN, source)  # pip builds in the source folder: never in the repository
    target = tmp_path_factory.mktemp("site")
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(target), str(source)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"pip cannot build the demo plug-in here: {res.stderr[-300:]}")
    return target


def _imcsim(site: Path, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "imcsim.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, check=False)


def test_an_installed_plugin_is_listed_and_used(installed, tmp_path):
    listed = _imcsim(installed, "list", "kinds")
    assert listed.returncode == 0, listed.stderr
    assert "device.kind: demo_sram" in listed.stdout
    card = tmp_path / "demo.yaml"
    card.write_text((ROOT / "devices" / "sram_6t_28nm.yaml").read_text().replace("kind: sram", "kind: demo_sram"))
    res = _imcsim(installed, "validate", "configs/sas_mram_repnet_mobilenetv2_cost.yaml", "--set",
                  f"device.card={card}")
    assert res.returncode == 0, res.stderr
    assert "valid" in res.stdout


@pytest.mark.slow  # end to end, about 15 s: kept out of the default suite's 5 minutes
def test_an_installed_method_is_listed_and_trains(installed, tmp_path):
    import torch

    from imcsim.config import load_config
    from imcsim.workloads.backbones import build_backbone

    listed = _imcsim(installed, "list", "methods")
    assert listed.returncode == 0, listed.stderr
    assert any(line.split()[:2] == ["demo_bias_head", "continual_learning"] for line in listed.stdout.splitlines())
    config = "configs/sas_mram_repnet_mobilenetv2_cost.yaml"
    res = _imcsim(installed, "run", config, "--set", "workload.method=demo_bias_head", "--set",
                  "workload.baselines=[last_layer]", "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    card = load_config(ROOT / config).config.workload
    norms = [m for m in build_backbone(card.model.arch, card.cost_only.in_channels, card.model.width).modules()
             if isinstance(m, torch.nn.BatchNorm2d)]
    rows = {row["method"]: row for row in report["tables"]["methods"]}
    assert list(rows) == ["demo_bias_head", "last_layer"]
    # the heads as last_layer, plus the bias of the backbone's last batch norm
    assert report["metrics"]["trainable_params"] == rows["last_layer"]["trainable_params"] + norms[-1].num_features


def test_without_the_plugin_its_kind_is_unknown(tmp_path):
    card = tmp_path / "demo.yaml"
    card.write_text((ROOT / "devices" / "sram_6t_28nm.yaml").read_text().replace("kind: sram", "kind: demo_sram"))
    res = _imcsim(tmp_path, "validate", "configs/sas_mram_repnet_mobilenetv2_cost.yaml", "--set",
                  f"device.card={card}")
    assert res.returncode == 2
    assert "device.kind: must be one of" in res.stderr
    res = _imcsim(tmp_path, "validate", "configs/sas_mram_repnet_mobilenetv2_cost.yaml", "--set",
                  "workload.method=demo_bias_head")
    assert res.returncode == 2
    assert ("workload.method: must be one of 'repnet', 'repnet_bias', 'last_layer', 'bias_only', 'tinytl', 'da2', "
            "'da3', 'gradient_filter', 'mobiletl' or 'full' (got 'demo_bias_head')") in res.stderr


def test_a_broken_plugin_is_one_line_naming_its_entry_point(monkeypatch, capsys):
    from importlib.metadata import EntryPoint

    from imcsim import cli, registry

    broken = EntryPoint(name="broken", value="no_such_module_anywhere:register", group="imcsim.devices")
    monkeypatch.setattr(registry, "entry_points", lambda group: [broken] if group == "imcsim.devices" else [])
    registry.load_plugins.cache_clear()
    try:
        code = cli.main(["validate", str(ROOT / "configs" / "sas_mram_repnet.yaml")])
    finally:
        registry.load_plugins.cache_clear()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert "plug-in broken (imcsim.devices)" in err[0]
    assert "ModuleNotFoundError" in err[0]


def test_a_kind_registers_once_with_a_description():
    with pytest.raises(ValueError, match="registered already"):
        DEVICES.register("sram", object, None, "again")
    with pytest.raises(ValueError, match="description"):
        DEVICES.register("new_kind", object, None, " ")
    with pytest.raises(ValueError, match="registered already"):
        METHODS.register("repnet", METHODS["last_layer"], "again")
    for registry in (*REGISTRIES, METHODS):
        assert all(len(d) > 10 for d in registry.descriptions.values())
