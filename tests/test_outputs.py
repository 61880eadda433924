"""Output paths never destroy what imcsim did not write; folders are replaced atomically; leftovers recovered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from imcsim import cli
from imcsim.errors import InputError
from imcsim.files import (
    MARKER,
    _exchange,
    check_output_file,
    check_output_folder,
    is_imcsim_file,
    recover_folder,
    write_folder,
)

ROOT = Path(__file__).resolve().parents[1]
MAIN = str(ROOT / "configs" / "sas_mram_repnet.yaml")
COST = str(ROOT / "configs" / "sas_mram_repnet_mobilenetv2_cost.yaml")


def _cli(capsys, *argv: str) -> tuple[int, list[str]]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err.strip().splitlines()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _user_folder(tmp_path: Path) -> Path:
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    (user / "data").mkdir()
    (user / "data" / "a.csv").write_text("1,2\n")
    return user


@pytest.mark.parametrize("command", [["run", MAIN], ["compare", MAIN]])
def test_out_naming_a_users_folder_is_refused_and_nothing_is_touched(tmp_path, capsys, command):
    user = _user_folder(tmp_path)
    before = _snapshot(tmp_path)
    code, err = _cli(capsys, *command, "--out", str(user), "--quiet")
    assert code == 2
    assert len(err) == 1
    assert "--out" in err[0]
    assert MARKER in err[0]
    assert _snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


@pytest.mark.parametrize("command", [["run", MAIN], ["compare", MAIN], ["sweep", COST, "--grid", "seed=1,2"]])
def test_out_naming_an_existing_file_is_refused(tmp_path, capsys, command):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    code, err = _cli(capsys, *command, "--out", str(target), "--quiet")
    assert code == 2
    assert len(err) == 1
    assert "--out" in err[0]
    assert target.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_sweep_out_naming_a_users_folder_is_refused(tmp_path, capsys):
    user = _user_folder(tmp_path)
    before = _snapshot(tmp_path)
    code, err = _cli(capsys, "sweep", COST, "--grid", "seed=1,2", "--out", str(user), "--quiet")
    assert code == 2
    assert len(err) == 1
    assert "--out" in err[0]
    assert _snapshot(tmp_path) == before


def test_trace_naming_a_users_file_is_refused_before_the_run(tmp_path, capsys):
    trace = tmp_path / "trace.json"
    trace.write_text('{"mine": true}')
    code, err = _cli(capsys, "run", COST, "--out", str(tmp_path / "o"), "--quiet", "--trace", str(trace))
    assert code == 2
    assert len(err) == 1
    assert "--trace" in err[0]
    assert trace.read_text() == '{"mine": true}'
    assert not (tmp_path / "o").exists()


def test_device_plot_naming_a_users_file_is_refused(tmp_path, capsys):
    png = tmp_path / "figure.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    code, err = _cli(capsys, "device", "sas_mram_4mtj_zhang_tcad2024", "--library", str(ROOT), "--plot", str(png))
    assert code == 2
    assert len(err) == 1
    assert "--plot" in err[0]
    assert png.read_bytes() == b"\x89PNG\r\n\x1a\n" + b"\0" * 100


def test_files_imcsim_wrote_are_recognised_and_may_be_replaced(tmp_path):
    from imcsim import plots
    from imcsim.devices import build_device
    from imcsim.files import atomic_write
    from imcsim.sim.chrome import write_chrome_trace

    trace = write_chrome_trace({"otherData": {"generator": "imcsim 0"}, "traceEvents": [{"x": 1}] * 5000},
                               tmp_path / "t.json")
    assert is_imcsim_file(trace)
    assert check_output_file(trace, "--trace", "trace.json") == trace
    from imcsim.config import load_card

    card, _ = load_card("device", "sas_mram_4mtj_zhang_tcad2024", library=ROOT)
    png = atomic_write(tmp_path / "d.png", plots.plot_switching(build_device(card).write_path(), "t"))
    assert is_imcsim_file(png)
    other = tmp_path / "o.png"
    other.write_bytes(png.read_bytes().replace(b"imcsim", b"xxxxxx"))
    assert not is_imcsim_file(other)
    with pytest.raises(InputError, match="did not write"):
        check_output_file(other, "--plot", "device.png")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs a read-only /proc")
@pytest.mark.parametrize("option", ["--out", "--trace"])
def test_an_unwritable_output_location_is_refused_before_the_run(tmp_path, capsys, option):
    where = "/proc/imcsim-nowhere/x"
    argv = ["run", COST, "--quiet", "--out", where if option == "--out" else str(tmp_path / "o")]
    if option == "--trace":
        argv += ["--trace", where + ".json"]
    code, err = _cli(capsys, *argv)
    assert code == 2
    assert len(err) == 1
    assert option in err[0]
    assert "cannot write" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_an_empty_folder_and_an_imcsim_folder_are_accepted(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_output_folder(empty, "--out") == empty
    out = write_folder(tmp_path / "run", lambda d: (d / "a.txt").write_text("1"))
    assert (out / MARKER).is_file()
    assert check_output_folder(out, "--out") == out
    write_folder(out, lambda d: (d / "b.txt").write_text("2"))
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "b.txt"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "run"]


def test_the_exchange_swaps_two_folders_in_one_step(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    if not _exchange(a, b):
        pytest.skip("this file system cannot exchange names; the two-rename fallback is tested below")
    assert (a / "x").read_text() == "b"
    assert (b / "x").read_text() == "a"


_KILL = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import imcsim.files as files
    out, stage = Path(sys.argv[1]), sys.argv[2]
    files._exchange = lambda a, b: False  # the two-rename fallback: the one with a window between renames
    real_rename = os.rename
    def fill(tmp):
        (tmp / "report.json").write_text("second")
        if stage == "filling":
            os._exit(9)
    def rename(src, dst):
        real_rename(src, dst)
        if stage == "between" and ".old-" in str(dst):
            os._exit(9)
    os.rename = rename
    files.write_folder(out, fill)
""")


@pytest.mark.parametrize(("stage", "expected"), [("filling", "first"), ("between", "second")])
def test_a_kill_at_any_instant_leaves_one_complete_report_after_recovery(tmp_path, stage, expected):
    out = tmp_path / "run"
    write_folder(out, lambda d: (d / "report.json").write_text("first"))
    res = subprocess.run([sys.executable, "-c", _KILL, str(out), stage], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 9, res.stderr
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "run"]
    assert leftovers, "the kill left no hidden folder: the test did not exercise the window"
    recover_folder(out)
    assert (out / "report.json").read_text() == expected
    assert (out / MARKER).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_the_next_run_recovers_and_cleans_leftovers(tmp_path):
    out = tmp_path / "run"
    write_folder(out, lambda d: (d / "report.json").write_text("first"))
    os.rename(out, tmp_path / ".run.old-abc123")  # a kill between the fallback's two renames
    (tmp_path / ".run.tmp-def456").mkdir()  # a kill while filling
    (tmp_path / ".run.tmp-def456" / "report.json").write_text("partial")
    write_folder(out, lambda d: (d / "report.json").write_text("third"))
    assert (out / "report.json").read_text() == "third"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_a_report_written_by_run_can_be_rewritten_by_the_next_run(tmp_path, capsys):
    out = tmp_path / "o"
    for seed in ("1", "2"):
        code, err = _cli(capsys, "run", COST, "--out", str(out), "--quiet", "--seed", seed)
        assert code == 0, err
        assert json.loads((out / "report.json").read_text())["seed"] == int(seed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", "tab\there", "x" * 201, " padded"])
def test_unsafe_config_names_are_refused(tmp_path, capsys, name):
    code, err = _cli(capsys, "validate", MAIN, "--set", f"name={json.dumps(name)}")
    assert code == 2
    assert len(err) == 1
    assert "name:" in err[0]
    assert list(tmp_path.iterdir()) == []
