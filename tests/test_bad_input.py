"""Every bad input found by fuzzing is one line naming the file (or --set) and the key, exit 2, fast."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from imcsim import cli

ROOT = Path(__file__).resolve().parents[1]
MAIN = str(ROOT / "configs" / "sas_mram_repnet.yaml")
COST = str(ROOT / "configs" / "sas_mram_repnet_mobilenetv2_cost.yaml")


def _refused(capsys, *argv: str) -> str:
    """Run the CLI in-process; it must exit 2 with exactly one stderr line, returned."""
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    assert len(lines[0]) < 700
    return lines[0]


@pytest.mark.parametrize(
    ("override", "key", "says"),
    [
        ("device.write.t_set=2 ms/Ms", "device.write.t_set", "units cancel"),
        ("device.write.t_set=3 nm/m", "device.write.t_set", "a time"),
        ("device.write.t_set=150 %", "device.write.t_set", "a time"),
        ("device.mtj.v_half=1e-300", "device.mtj.v_half", ">= 50 mV"),
        ("device.read.v_read=1e-300", "device.read.v_read", ">= 10 mV"),
        ("seed=" + "7" * 400, "seed", "too large"),
        ("device.mtj.delta=" + "7" * 400, "device.mtj.delta", "too large"),
        ("circuit.array.rows=.nan", "circuit.array.rows", "finite"),
        ("schema_version=true", "schema_version", "must be 1"),
        ("workload.repnet.side_blocks=[0, 99]", "workload.repnet.side_blocks", "0..3"),
        ("device.mtj={}", "device.mtj.length", "missing"),
        ("name=" + "x" * 20_000, "name", "at most 200 bytes"),
        ("device.write.t_set=" + "9" * 10_000 + " ns", "device.write.t_set", "finite"),
    ],
)
def test_bad_set_values_name_set_and_the_precise_key(capsys, override, key, says):
    line = _refused(capsys, "validate", MAIN, "--set", override)
    assert line.startswith(f"imcsim: error: --set: {key}: "), line
    assert says in line


def test_a_kind_changed_by_set_is_named_when_the_card_keys_do_not_fit(capsys):
    line = _refused(capsys, "validate", MAIN, "--set", "device.kind=sram")
    assert "unknown key" in line
    assert "device.kind is 'sram', set by --set" in line


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def _main_text(**replace: str) -> str:
    text = Path(MAIN).read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


def test_a_boolean_schema_version_is_refused_in_configs_and_cards(tmp_path, capsys):
    path = _config(tmp_path, _main_text(**{"schema_version: 1": "schema_version: true"}))
    line = _refused(capsys, "validate", str(path), "--library", str(ROOT))
    assert "schema_version: must be 1 (got True)" in line
    card = tmp_path / "devices" / "mine.yaml"
    card.parent.mkdir()
    card.write_text((ROOT / "devices" / "sas_mram_4mtj_zhang_tcad2024.yaml").read_text()
                    .replace("schema_version: 1", "schema_version: true"))
    line = _refused(capsys, "validate", MAIN, "--set", f"device.card={card}")
    assert "mine.yaml: schema_version: must be 1 (got True)" in line


def test_a_key_given_twice_names_file_line_and_key(tmp_path, capsys):
    path = _config(tmp_path, _main_text() + "seed: 3\n")
    line = _refused(capsys, "validate", str(path), "--library", str(ROOT))
    first = next(i for i, ln in enumerate(Path(MAIN).read_text().splitlines(), 1) if ln.startswith("seed:"))
    assert f"c.yaml: line {len(_main_text().splitlines()) + 1}: key 'seed' given twice" in line
    assert f"first on line {first}" in line


@pytest.mark.parametrize("what", ["bomb", "deep_list", "deep_map"])
def test_alias_bombs_and_deep_nesting_fail_fast(tmp_path, capsys, what):
    if what == "bomb":
        extra = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        extra += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
        text = "\n".join(extra) + "\n"
    elif what == "deep_list":
        text = "deep: " + "[" * 1000 + "]" * 1000 + "\n"
    else:
        text = "deep: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n"
    path = _config(tmp_path, _main_text() + text)
    t0 = time.perf_counter()
    line = _refused(capsys, "validate", str(path), "--library", str(ROOT))
    assert time.perf_counter() - t0 < 1.0  # the limits are checked before anything expands
    assert "c.yaml" in line
    assert ("expands to" in line) if what == "bomb" else ("nested more than 64 levels" in line)


def test_a_set_value_that_is_a_bomb_is_refused(capsys):
    bomb = "[" * 100 + "]" * 100
    line = _refused(capsys, "validate", MAIN, "--set", f"workload.repnet.side_blocks={bomb}")
    assert "--set: workload.repnet.side_blocks: the value is nested more than 64 levels" in line


@pytest.mark.parametrize("card", ["x" * 300, "y" * 5000 + ".yaml", "a\x00b"])
def test_card_names_the_file_system_refuses_are_input_errors(capsys, card):
    line = _refused(capsys, "validate", MAIN, "--set", f"device.card={json.dumps(card)}")
    assert "--set: device.card: " in line


@pytest.mark.parametrize("what", ["folder", "deep", "huge_number", "binary"])
def test_from_report_that_is_not_a_report_is_an_input_error(tmp_path, capsys, what):
    report = tmp_path / "report.json"
    if what == "folder":
        report.mkdir()
    elif what == "deep":
        report.write_text("[" * 100_000 + "]" * 100_000)
    elif what == "huge_number":
        report.write_text('{"tables": {"activity": ' + "9" * 5000 + "}}")
    else:
        report.write_bytes(bytes(range(256)))
    line = _refused(capsys, "validate", COST, "--set", f"workload.cost_only.activity.from_report={report}")
    assert line.startswith("imcsim: error: --set: workload.cost_only.activity.from_report: ")


def test_an_unevaluable_combination_names_the_section(capsys):
    from imcsim.api import _built
    from imcsim.config import load_config
    from imcsim.errors import InputError

    loaded = load_config(MAIN)
    with pytest.raises(InputError) as info:
        _built(loaded, "device", lambda: 10.0**400)
    assert info.value.key == "device"
    assert "OverflowError" in str(info.value)


def test_an_echoed_value_is_cut(capsys):
    line = _refused(capsys, "validate", MAIN, "--set", "device.write.t_set=" + "ab" * 5000)
    assert " ... " in line
    assert len(line) < 300


@pytest.mark.parametrize("command", [["list", "devices"], ["validate", MAIN]])
def test_a_library_that_is_not_a_folder_is_refused(tmp_path, capsys, command):
    line = _refused(capsys, *command, "--library", str(tmp_path / "nowhere"))
    assert line.startswith("imcsim: error: --library: ")


def test_an_unknown_swept_key_names_its_axis(tmp_path, capsys):
    line = _refused(capsys, "sweep", COST, "--grid", "nosuch.key=1,2", "--out", str(tmp_path / "s"))
    assert line.startswith("imcsim: error: --grid: nosuch: swept key nosuch.key: unknown key")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("settings", "key", "says"), [
    (["workload.method=tinytl", "workload.tinytl.blocks=[99]"], "workload.tinytl.blocks", "block indices 0..18"),
    (["workload.method=tinytl", "workload.tinytl.groups=3"], "workload.tinytl.groups", "must divide"),
    (["workload.method=da2", "workload.attention.blocks=[stem]"], "workload.attention.blocks", "no module named"),
    (["workload.method=gradient_filter", "workload.gradient_filter.layers=500"], "workload.gradient_filter.layers",
     "52 convolutions"),
    (["workload.method=mobiletl", "workload.mobiletl.blocks=50"], "workload.mobiletl.blocks", "19 blocks"),
    (["workload.gradient_filter.radius=1"], "workload.gradient_filter.radius", ">= 2"),
    (["workload.cost_only.activity.by_method={gradient_filtr: {weight_change_fraction: 0.1}}"],
     "workload.cost_only.activity.by_method", "'gradient_filtr' is not a continual-learning method"),
    (["workload.cost_only.activity.by_method.full.weight_bit_density=2"],
     "workload.cost_only.activity.by_method.full.weight_bit_density", "<= 1"),
])
def test_a_method_section_that_does_not_fit_the_backbone_names_its_key(capsys, settings, key, says):
    line = _refused(capsys, "run", COST, "--quiet", *(x for s in settings for x in ("--set", s)))
    assert f"{key}:" in line
    assert says in line


@pytest.mark.parametrize(
    ("sets", "key", "says"),
    [
        (["circuit.dataflow.weight_reuse=in_cell"], "circuit.dataflow.weight_reuse", "must be sensed"),
        (["circuit.dataflow.input_encoding=booth"], "circuit.dataflow.input_encoding", "booth_radix4"),
    ],
)
def test_in_cell_compute_and_booth_refusals_name_their_key(capsys, sets, key, says):
    """In-cell compute on a cell that must be sensed (MRAM), or without the gate beside each cell, and an
    unknown input encoding: exit 2, one line naming the key."""
    line = _refused(capsys, "validate", MAIN, *[x for s in sets for x in ("--set", s)])
    assert key in line, line
    assert says in line, line


@pytest.mark.parametrize(
    ("override", "key"),
    [("workload.lorafusion.coefficient_init=ones", "workload.lorafusion.coefficient_init"),
     ("workload.lorafusion.layout=diagonal", "workload.lorafusion.layout"),
     ("device.programming.step=autom", "device.programming.step"),
     ("device.relaxation.scale=relative", "device.relaxation.scale")],
)
def test_lorafusion_and_reram_programming_options_refuse_unknown_values(capsys, override, key):
    line = _refused(capsys, "validate", str(ROOT / "configs" / "reram_lorafusion_bert_mini_cost.yaml"), "--set",
                    override)
    assert key in line, line


def test_in_cell_compute_without_a_gate_card_names_the_role(tmp_path, capsys):
    """A circuit card of one's own that names no ``cell_gate``: in_cell is refused naming the role to add."""
    card = (ROOT / "circuits" / "bitserial_macro_28nm.yaml").read_text()
    (tmp_path / "mine.yaml").write_text("\n".join(x for x in card.splitlines() if "cell_gate" not in x))
    line = _refused(capsys, "validate", MAIN, "--set", f"circuit.card={tmp_path / 'mine.yaml'}", "--set",
                    "device.card=sram_6t_28nm", "--set", "circuit.dataflow.weight_reuse=in_cell")
    assert "circuit.components.cell_gate" in line, line
    assert "logic_gate" in line, line
