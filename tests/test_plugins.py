"""Kinds register once, in registries; other packages add kinds through entry points."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imcsim.registry import DEVICES, REGISTRIES

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


def test_without_the_plugin_its_kind_is_unknown(tmp_path):
    card = tmp_path / "demo.yaml"
    card.write_text((ROOT / "devices" / "sram_6t_28nm.yaml").read_text().replace("kind: sram", "kind: demo_sram"))
    res = _imcsim(tmp_path, "validate", "configs/sas_mram_repnet_mobilenetv2_cost.yaml", "--set",
                  f"device.card={card}")
    assert res.returncode == 2
    assert "device.kind: must be one of" in res.stderr


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
    for registry in REGISTRIES:
        assert all(len(d) > 10 for d in registry.descriptions.values())
