"""Config loading and validation: every bad input is one line naming file and key.

Each test builds a small card library in ``tmp_path`` (copies of the
repository's devices/, circuits/, workloads/ and its headline config) and
breaks one thing in it.
"""

from __future__ import annotations

import copy
import re
import shutil
import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import imcsim
from imcsim import units
from imcsim.api import build_hardware
from imcsim.cli import main
from imcsim.config import load_config
from imcsim.errors import InputError

REPO = Path(__file__).resolve().parents[1]
CONFIG_NAME = "sas_mram_repnet.yaml"
DEVICE_CARD = "sas_mram_4mtj_zhang_tcad2024"
DEVICE_FILE = f"devices/{DEVICE_CARD}.yaml"
CARD_FILES = {
    "device": DEVICE_FILE,
    "circuit": "circuits/bitserial_macro_28nm.yaml",
    "workload": "workloads/repnet_digits_tiny.yaml",
}
BASE_CONFIG: dict[str, Any] = yaml.safe_load((REPO / "configs" / CONFIG_NAME).read_text())


# --- fixtures and helpers ------------------------------------------------------


def _make_library(root: Path) -> Path:
    for sub in ("devices", "circuits", "workloads"):
        shutil.copytree(REPO / sub, root / sub, dirs_exist_ok=True)
    shutil.copy(REPO / "configs" / CONFIG_NAME, root / CONFIG_NAME)
    return root


@pytest.fixture
def lib(tmp_path, monkeypatch) -> Path:
    """A card library in tmp_path, which is also the working directory.

    From there imcsim shows files relative to it: ``broken.yaml``,
    ``devices/<card>.yaml``.
    """
    _make_library(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_config(lib: Path, data: dict[str, Any] | None = None, name: str = "broken.yaml",
                 text: str | None = None) -> Path:
    path = lib / name
    path.write_text(text if text is not None else yaml.safe_dump(data, sort_keys=False))
    return path


def mutated(**changes: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg.update(changes)
    return cfg


def break_card(lib: Path, old: str, new: str, card: str = DEVICE_FILE) -> None:
    path = lib / card
    text = path.read_text()
    assert old in text, f"{old!r} not in {card}"
    path.write_text(text.replace(old, new, 1))


def expect_error(path: Path, overrides: list[str] | None = None, *, file: str | None,
                 key: str | None, says: tuple[str, ...] = ()) -> InputError:
    """load_config must fail with one line ``file: key: message`` that says ``says``."""
    with pytest.raises(InputError) as info:
        load_config(path, overrides)
    err = info.value
    msg = str(err)
    assert "\n" not in msg, msg
    assert err.file == file, msg
    assert err.key == key, msg
    if file or key:
        prefix = ": ".join(p for p in (file, key) if p)
        assert msg.startswith(prefix + ": "), msg
    for words in says:
        assert words in msg, f"{words!r} not in {msg!r}"
    return err


# --- valid configs and where their values come from -----------------------------


def test_valid_config_loads_with_origins(lib):
    loaded = load_config(lib / CONFIG_NAME)
    assert loaded.cards == CARD_FILES
    cfg = loaded.config
    assert cfg.name == "sas_mram_repnet"
    assert cfg.seed == 0
    # Card values are typed SI floats with their [reference] tags stripped.
    assert cfg.device.mtj.tmr0 == pytest.approx(1.5)
    assert cfg.device.read.t_read_s == pytest.approx(1.4e-9)
    assert loaded.origins["device.mtj.tmr"] == DEVICE_FILE
    assert loaded.origins["circuit.array.rows"] == CARD_FILES["circuit"]
    assert loaded.origins["seed"] == CONFIG_NAME
    hw = build_hardware(loaded)
    assert hw.device.kind == "sas_mram"


def test_set_and_section_override_origins(lib):
    over = mutated(device={"card": DEVICE_CARD, "read": {"t_read": "2 ns"}})
    path = write_config(lib, over)
    loaded = load_config(path, ["device.mtj.tmr=2", "seed=7"])
    assert loaded.config.device.mtj.tmr0 == 2.0
    assert loaded.config.device.read.t_read_s == pytest.approx(2e-9)
    assert loaded.config.seed == 7
    assert loaded.origins["device.mtj.tmr"] == "--set"
    assert loaded.origins["seed"] == "--set"
    assert loaded.origins["device.read.t_read"] == "broken.yaml"
    assert loaded.origins["device.mtj.length"] == DEVICE_FILE


def test_bad_value_is_attributed_to_the_card_that_set_it(lib):
    break_card(lib, "tmr: 150 % [apalkov2016]", "tmr: -1 [apalkov2016]")
    expect_error(lib / CONFIG_NAME, file=DEVICE_FILE, key="device.mtj.tmr", says=("must be > 0", "-1"))


def test_bad_value_in_section_override_is_attributed_to_the_config(lib):
    path = write_config(lib, mutated(device={"card": DEVICE_CARD, "read": {"t_read": "10 nm"}}))
    expect_error(path, file="broken.yaml", key="device.read.t_read", says=("a time", "10 nm"))


def test_bad_value_from_set_is_attributed_to_set_even_if_card_is_fine(lib):
    expect_error(lib / CONFIG_NAME, ["device.mtj.tmr=-1"], file="--set", key="device.mtj.tmr",
                 says=("must be > 0", "-1"))


# --- the listed breakages -------------------------------------------------------


def test_unknown_top_level_key_did_you_mean(lib):
    cfg = mutated()
    cfg["seeed"] = cfg.pop("seed")
    path = write_config(lib, cfg)
    expect_error(path, file="broken.yaml", key="seeed",
                 says=("unknown key 'seeed'", "did you mean 'seed'?", "valid: ", "schema_version"))


def test_unknown_nested_key_in_section_override(lib):
    path = write_config(lib, mutated(device={"card": DEVICE_CARD, "mtj": {"tmrr": 1}}))
    expect_error(path, file="broken.yaml", key="device.mtj.tmrr",
                 says=("unknown key 'tmrr'", "did you mean 'tmr'?", "jc0_stt", "v_half"))


def test_unknown_key_in_run_section(lib):
    path = write_config(lib, mutated(run={"mode": "functional", "torch_devcie": "cpu"}))
    expect_error(path, file="broken.yaml", key="run.torch_devcie", says=("did you mean 'torch_device'?",))


def test_unknown_key_added_to_card(lib):
    break_card(lib, "  tau0: 1 ns [koch2004]", "  tau0: 1 ns [koch2004]\n  bogus: 3")
    expect_error(lib / CONFIG_NAME, file=DEVICE_FILE, key="device.mtj.bogus", says=("unknown key 'bogus'",))


def test_wrong_type(lib):
    path = write_config(lib, mutated(seed="abc"))
    expect_error(path, file="broken.yaml", key="seed", says=("integer", "'abc'"))


def test_wrong_literal_lists_choices(lib):
    path = write_config(lib, mutated(run={"mode": "fast"}))
    expect_error(path, file="broken.yaml", key="run.mode", says=("'functional'", "'cost_only'", "'fast'"))


def test_unit_of_wrong_dimension_from_set(lib):
    expect_error(lib / CONFIG_NAME, ["device.read.t_read=10nm"], file="--set", key="device.read.t_read",
                 says=("expected a time", "'10nm'", "a length"))


def test_unit_of_wrong_dimension_in_card(lib):
    break_card(lib, "t_read: 1.4 ns [fpsmr2025]", "t_read: 1.4 nm [fpsmr2025]")
    expect_error(lib / CONFIG_NAME, file=DEVICE_FILE, key="device.read.t_read",
                 says=("expected a time", "1.4 nm"))


def test_out_of_range_value(lib):
    err = expect_error(lib / CONFIG_NAME, ["device.mtj.tmr=-1"], file="--set", key="device.mtj.tmr")
    assert re.search(r"must be > 0\s+\(got -1(\.0)?\)", str(err)), str(err)


def test_out_of_range_bound_is_shown_in_units(lib):
    expect_error(lib / CONFIG_NAME, ["device.mtj.length=1nm"], file="--set", key="device.mtj.length",
                 says=("must be > 5 nm",))


def test_out_of_range_message_spacing(lib):
    expect_error(lib / CONFIG_NAME, ["device.mtj.tmr=-1"], file="--set", key="device.mtj.tmr",
                 says=("must be > 0 (got -1.0)",))


def test_missing_card_lists_available(lib):
    path = write_config(lib, mutated(device={"card": "nope"}))
    expect_error(path, file="broken.yaml", key="device.card",
                 says=("no card 'nope'", "(available: ", DEVICE_CARD, "sram_6t_28nm"))


def test_misspelt_card_did_you_mean(lib):
    path = write_config(lib, mutated(circuit={"card": "bitserial_macro_28mn"}))
    expect_error(path, file="broken.yaml", key="circuit.card",
                 says=("did you mean 'bitserial_macro_28nm'?", "available: bitserial_macro_28nm"))


def test_card_given_as_missing_path(lib):
    path = write_config(lib, mutated(device={"card": "elsewhere/card.yaml"}))
    expect_error(path, file="broken.yaml", key="device.card", says=("no card file", "card.yaml"))


def test_card_tag_naming_no_reference(lib):
    break_card(lib, "tmr: 150 % [apalkov2016]", "tmr: 150 % [nosuch]")
    expect_error(lib / CONFIG_NAME, file=DEVICE_FILE, key="device.mtj.tmr",
                 says=("[nosuch]", "references"))


def test_card_tag_near_miss_did_you_mean(lib):
    break_card(lib, "tmr: 150 % [apalkov2016]", "tmr: 150 % [apalkov2061]")
    expect_error(lib / CONFIG_NAME, file=DEVICE_FILE, key="device.mtj.tmr", says=("did you mean 'apalkov2016'?",))


def test_yaml_syntax_error_in_config_names_the_line(lib):
    lines = (lib / CONFIG_NAME).read_text().splitlines()
    bad = lines.index("seed: 0")
    lines[bad] = "seed: 0: 1"
    path = write_config(lib, text="\n".join(lines) + "\n")
    err = expect_error(path, file="broken.yaml", key=None, says=(f"line {bad + 1}:",))
    assert "mapping values are not allowed" in str(err)


def test_yaml_syntax_error_in_card_names_the_card(lib):
    text = (lib / DEVICE_FILE).read_text().splitlines()
    bad = text.index("  width: 50 nm [zhang2024]")
    text[bad] = "  width: 50 nm: [zhang2024]"
    (lib / DEVICE_FILE).write_text("\n".join(text) + "\n")
    expect_error(lib / CONFIG_NAME, file=DEVICE_FILE, key=None, says=(f"line {bad + 1}:",))


def test_config_not_a_mapping(lib):
    path = write_config(lib, text="- 1\n- 2\n")
    expect_error(path, file="broken.yaml", key=None, says=("mapping",))


def test_missing_config_file(lib):
    expect_error(lib / "absent.yaml", file="absent.yaml", key=None, says=("no such file",))


def test_schema_version_wrong(lib):
    path = write_config(lib, mutated(schema_version=2))
    expect_error(path, file="broken.yaml", key="schema_version", says=("must be 1", "got 2"))


def test_schema_version_missing(lib):
    cfg = mutated()
    del cfg["schema_version"]
    path = write_config(lib, cfg)
    expect_error(path, file="broken.yaml", key="schema_version", says=("must be 1", "got None"))


def test_card_schema_version_wrong(lib):
    break_card(lib, "schema_version: 1", "schema_version: 3")
    expect_error(lib / CONFIG_NAME, file=DEVICE_FILE, key="schema_version", says=("must be 1", "got 3"))


@pytest.mark.parametrize("section", ["device", "circuit", "workload"])
def test_missing_section(lib, section):
    cfg = mutated()
    del cfg[section]
    path = write_config(lib, cfg)
    expect_error(path, file="broken.yaml", key=section, says=("missing", "'card'"))


def test_section_without_card(lib):
    path = write_config(lib, mutated(workload={"train": {"lr": 0.1}}))
    expect_error(path, file="broken.yaml", key="workload", says=("'card'",))


def test_missing_required_top_level_value(lib):
    cfg = mutated()
    del cfg["name"]
    path = write_config(lib, cfg)
    expect_error(path, file="broken.yaml", key="name", says=("missing (required)",))


@pytest.mark.parametrize("item", ["device.read.t_read", "seed"])
def test_set_without_equals(lib, item):
    err = expect_error(lib / CONFIG_NAME, [item], file="--set", key=item, says=(f"'{item}'", "KEY=VALUE"))
    assert str(err).startswith(f"--set: {item}: ")


@pytest.mark.parametrize(("item", "key"), [("=1", None), ("device..mtj=1", "device..mtj"), (".seed=1", ".seed")])
def test_set_with_bad_key(lib, item, key):
    expect_error(lib / CONFIG_NAME, [item], file="--set", key=key, says=(f"'{item}'", "dotted names"))


def test_set_into_a_value(lib):
    expect_error(lib / CONFIG_NAME, ["seed.x=1"], file="--set", key="seed", says=("'seed.x'", "not a section"))


def test_set_unknown_top_level_key(lib):
    expect_error(lib / CONFIG_NAME, ["seeed=1"], file="--set", key="seeed", says=("did you mean 'seed'?",))


def test_set_unknown_nested_key(lib):
    expect_error(lib / CONFIG_NAME, ["device.mtj.tmrr=1"], file="--set", key="device.mtj.tmrr",
                 says=("did you mean 'tmr'?",))


def test_seed_argument_overrides(lib):
    loaded = load_config(lib / CONFIG_NAME, ["seed=3"], seed=11)
    assert loaded.config.seed == 11
    assert loaded.origins["seed"] == "--seed"


# --- physics checks after validation --------------------------------------------


def test_build_hardware_rejects_unphysical_set_value(lib):
    loaded = load_config(lib / CONFIG_NAME, ["device.write.i_set_sot=500uA"])  # in range: <= 5 mA
    with pytest.raises(InputError) as info:
        build_hardware(loaded)
    err = info.value
    msg = str(err)
    assert "\n" not in msg
    assert err.file == "--set"
    assert err.key == "device.write.i_set_sot"
    assert msg.startswith("--set: device.write.i_set_sot: ")
    assert "critical current" in msg
    assert "500 uA" in msg


def test_build_hardware_names_config_for_unphysical_override(lib):
    path = write_config(lib, mutated(device={"card": DEVICE_CARD, "write": {"i_reset": "50 uA"}}))
    loaded = load_config(path)
    with pytest.raises(InputError) as info:
        build_hardware(loaded)
    assert info.value.file == "broken.yaml"
    assert info.value.key == "device.write.i_reset"
    assert "critical current" in str(info.value)


def test_build_hardware_names_card_for_unphysical_card(lib):
    break_card(lib, "i_set_sot: 120 uA [design]", "i_set_sot: 500 uA [design]")
    loaded = load_config(lib / CONFIG_NAME)
    with pytest.raises(InputError) as info:
        build_hardware(loaded)
    assert info.value.file == DEVICE_FILE
    assert info.value.key == "device.write.i_set_sot"


# --- regressions: defects found once and fixed ---------------------------------


def test_set_section_to_scalar_is_input_error(lib):
    expect_error(lib / CONFIG_NAME, ["device=1"], file="--set", key="device")


def test_cli_set_section_to_scalar_exits_2(lib, capsys):
    assert main(["validate", CONFIG_NAME, "--set", "circuit=[1, 2]"]) == 2
    assert capsys.readouterr().err.startswith("imcsim: error: --set")


def test_set_unknown_deep_key_is_attributed_to_set(lib):
    expect_error(lib / CONFIG_NAME, ["device.mtj.foo.bar=1"], file="--set", key="device.mtj.foo")


def test_cross_field_error_names_set_and_key(lib):
    from imcsim.api import build_hardware

    loaded = load_config(lib / CONFIG_NAME, ["device.heavy_metal.width=40nm"])
    with pytest.raises(InputError) as info:
        build_hardware(loaded)
    assert info.value.file == "--set"
    assert info.value.key == "device.heavy_metal.width"
    assert "must cover the MTJ width 50 nm" in str(info.value)


@pytest.mark.parametrize("item", ["seed=true", "workload.train.lr=true", "workload.train.epochs=yes"])
def test_boolean_for_number_rejected(lib, item):
    with pytest.raises(InputError):
        load_config(lib / CONFIG_NAME, [item])


def test_error_with_newline_in_value_stays_one_line(lib):
    with pytest.raises(InputError) as info:
        load_config(lib / CONFIG_NAME, ["device.mtj.tmr=a\n\nb"])
    assert "\n" not in str(info.value)


# --- CLI --------------------------------------------------------------------------


def test_cli_validate_repo_config(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["validate", "configs/sas_mram_repnet.yaml"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("configs/sas_mram_repnet.yaml: valid")
    assert f"device={DEVICE_FILE}" in out


def test_cli_list_devices(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    desc = yaml.safe_load((REPO / DEVICE_FILE).read_text())["description"]
    assert main(["list", "devices"]) == 0
    lines = capsys.readouterr().out.splitlines()
    hits = [line for line in lines if line.startswith(DEVICE_CARD)]
    assert len(hits) == 1
    assert hits[0].rstrip().endswith(desc)


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"imcsim {imcsim.__version__}"


def test_cli_bad_input_exit_code_and_one_line(lib, capsys):
    assert main(["validate", CONFIG_NAME, "--set", "device.read.t_read=10nm"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("imcsim: error: --set: device.read.t_read: expected a time (e.g. '10 ns'), "
                   "got '10nm' (a length (e.g. '100 nm'))\n")


def test_cli_unphysical_value_exit_2(lib, capsys):
    assert main(["validate", CONFIG_NAME, "--set", "device.write.i_set_sot=500uA"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imcsim: error: --set: device.write.i_set_sot: ")
    assert err.count("\n") == 1


def test_cli_library_option(tmp_path, monkeypatch, capsys):
    """A config outside any library takes its cards from --library, else from the built-in library."""
    from imcsim.config import BUILTIN_LIBRARY

    libdir = _make_library(tmp_path / "lib")
    (tmp_path / "cfgs").mkdir()
    cfg = tmp_path / "cfgs" / "c.yaml"
    shutil.move(libdir / CONFIG_NAME, cfg)
    monkeypatch.chdir(tmp_path / "cfgs")
    monkeypatch.delenv("IMCSIM_LIBRARY", raising=False)
    assert main(["validate", "c.yaml"]) == 0
    assert f"device={BUILTIN_LIBRARY / 'devices'}" in capsys.readouterr().out
    assert main(["validate", "c.yaml", "--library", str(libdir)]) == 0
    out = capsys.readouterr().out
    assert "c.yaml: valid" in out
    assert f"device={libdir / 'devices'}" in out


# --- property: any breaking mutation is a one-line exit-2 error -----------------

_TAG = re.compile(r"^(.*?)\s*\[([A-Za-z0-9_.\-]+)\]\s*$")
_CARDS = {s: yaml.safe_load((REPO / f).read_text()) for s, f in CARD_FILES.items()}


def _with_components(card: dict) -> dict:
    """A circuit card with each named component's card fields under its role (the keys --set can reach)."""
    out = dict(card)
    comps = {}
    for role, entry in (card.get("components") or {}).items():
        name = entry if isinstance(entry, str) else entry["card"]
        body = yaml.safe_load((REPO / "circuits" / "components" / f"{name}.yaml").read_text())
        fields = {k: v for k, v in body.items() if k not in ("schema_version", "kind", "references", "description")}
        comps[role] = {**fields, **({k: v for k, v in entry.items() if k != "card"} if isinstance(entry, dict) else {})}
    if comps:
        out["components"] = comps
    return out


_CARDS["circuit"] = _with_components(_CARDS["circuit"])


def _card_paths() -> tuple[list[tuple[str, ...]], list[tuple[str, Any]]]:
    """Mapping paths (where a key can be inserted) and numeric leaves (dotted, dimension)."""
    mappings: list[tuple[str, ...]] = [(), ("run",)]
    leaves: list[tuple[str, Any]] = [("seed", units.DIMENSIONLESS)]

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            mappings.append(path)
            for k, v in node.items():
                if k not in ("references", "description", "schema_version"):
                    walk(v, (*path, k))
            return
        if isinstance(node, bool) or not isinstance(node, int | float | str):
            return
        if isinstance(node, str):
            m = _TAG.match(node)
            text = m.group(1) if m else node
            try:
                dim = units.parse_quantity(text).dim
            except units.UnitError:
                return  # a name, not a number
        else:
            dim = units.DIMENSIONLESS
        leaves.append((".".join(path), dim))

    for section, card in _CARDS.items():
        walk(card, (section,))
    return mappings, leaves


MAPPING_PATHS, NUMERIC_LEAVES = _card_paths()
_WRONG_UNITS = ["ns", "nm", "pJ", "uA", "V", "kOhm", "MHz", "fF", "um^2", "mW", "K", "uS"]


def test_mutation_tables_cover_the_cards():
    assert ("device", "mtj") in MAPPING_PATHS
    assert ("circuit", "components", "sense_amp") in MAPPING_PATHS
    assert ("workload", "pretrain", "task") in MAPPING_PATHS
    leaves = dict(NUMERIC_LEAVES)
    assert leaves["device.read.t_read"] == units.TIME
    assert leaves["circuit.array.rows"] == units.DIMENSIONLESS
    assert len(NUMERIC_LEAVES) > 60


_key_suffix = st.text(alphabet=string.ascii_lowercase + string.digits + "_", min_size=1, max_size=8)
_scalar = st.one_of(st.integers(-1000, 1000), st.text(alphabet=string.ascii_letters + " ", max_size=10),
                    st.floats(allow_nan=False, allow_infinity=False))


@st.composite
def unknown_key(draw):
    path = draw(st.sampled_from(MAPPING_PATHS))
    key = "unk_" + draw(_key_suffix)
    cfg = copy.deepcopy(BASE_CONFIG)
    node = cfg
    for part in path:
        node = node.setdefault(part, {})
    node[key] = draw(_scalar)
    return cfg, [], ".".join((*path, key)), "config"


def _non_numeric(s: str) -> bool:
    return isinstance(yaml.safe_load(s), str)


@st.composite
def bad_set_value(draw):
    leaf, dim = draw(st.sampled_from(NUMERIC_LEAVES))
    kind = draw(st.sampled_from(["text", "negative", "unit"]))
    if kind == "text":
        value = draw(st.text(alphabet=string.ascii_letters + "_-", min_size=1, max_size=12).filter(_non_numeric))
    elif kind == "negative":
        value = repr(-draw(st.one_of(st.integers(1, 10**9), st.floats(1e-6, 1e9))))
    else:
        unit = draw(st.sampled_from([u for u in _WRONG_UNITS if units.parse_unit(u)[1] != dim]))
        value = f"{draw(st.floats(0.1, 1000)):g} {unit}"
    return copy.deepcopy(BASE_CONFIG), [f"{leaf}={value}"], leaf, "--set"


@st.composite
def missing_section(draw):
    section = draw(st.sampled_from(["device", "circuit", "workload", "schema_version", "name"]))
    cfg = copy.deepcopy(BASE_CONFIG)
    del cfg[section]
    return cfg, [], section, "config"


@given(case=st.one_of(unknown_key(), bad_set_value(), missing_section()))
@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_breaking_mutation_gives_one_line_exit_2(lib, capsys, case):
    cfg, overrides, key, source = case
    path = write_config(lib, cfg, name="mutant.yaml")
    capsys.readouterr()  # drop what earlier examples left
    argv = ["validate", str(path)]
    for item in overrides:
        argv += ["--set", item]
    rc = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert err.endswith("\n")
    line = lines[0]
    assert line.startswith("imcsim: error: ")
    assert ("mutant.yaml" if source == "config" else "--set") in line
    assert key in line
    assert out == ""
