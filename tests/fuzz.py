"""A generator of bad and borderline inputs, and the judge of what imcsim does with each.

Every case starts from a shipped config and its cards and applies one mutation:

* ``set``: a ``--set KEY=VALUE`` on any key the config resolves to (or a key it lacks), with a hostile value;
* ``config`` / ``card``: the same mutations written into the config file or one of its card files, plus
  removed keys, unknown keys and a section replaced by a scalar or a list;
* ``file``: the config or a card replaced by hostile text (empty, binary, invalid YAML, duplicate keys, an
  alias bomb, deep nesting, a list, ``schema_version: true``, a 400-digit integer);
* ``card_name``: a card reference that is too long, a folder, a path outside, empty;
* ``from_report``: a cost-only config whose activity comes from a hostile ``report.json``;
* ``data``: a CIFAR-10 batch or an image folder with hostile content (a pickle naming a callable, labels out
  of range, wrong dtypes, a decompression bomb, an image that is not one, random bytes).

Hostile values: extreme magnitudes (1e-300, 1e300, 10**400), NaN and infinities, zero and negatives, the
right number in a unit of another dimension or a unit that cancels (``2 ms/Ms``), malformed unit strings,
booleans, null, empty strings, lists, mappings, 10,000-character strings, and int/float swaps.

:func:`judge` runs a case in-process and returns ``None`` when imcsim behaved (accepted, with hardware that
builds and has finite, non-negative figures; or refused with an :class:`InputError` naming the file and,
for a value, the key, on one readable line, within the time budget), or a string saying what went wrong.

Run as a script to count failures over many cases: ``python tests/fuzz.py --cases 12000``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import shutil
import struct
import sys
import time
import traceback
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
SECTIONS = {"device": "devices", "circuit": "circuits", "workload": "workloads"}
TIME_BUDGET_S = 5.0
"""A refusal must come this fast: input checks never run the workload."""
PWNED = Path(f"/tmp/imcsim-fuzz-pwned-{os.getpid()}")
"""A file a hostile data file would create, were it run."""
LINE_BUDGET = 800
"""Longest acceptable error line."""


class Chooser:
    """Draws for the generator: from :mod:`random` (the script) or from hypothesis ``data`` (the test)."""

    def __init__(self, rng: random.Random | None = None, data: Any = None):
        self.rng, self.data = rng, data

    def pick(self, seq):
        seq = list(seq)
        if self.data is not None:
            from hypothesis import strategies as st

            return self.data.draw(st.sampled_from(seq))
        return self.rng.choice(seq)

    def integer(self, lo: int, hi: int) -> int:
        if self.data is not None:
            from hypothesis import strategies as st

            return self.data.draw(st.integers(lo, hi))
        return self.rng.randint(lo, hi)


@dataclass
class Case:
    """One input: a config path in a case folder, ``--set`` overrides, the library, and data to load."""

    kind: str
    config: Path
    library: Path
    overrides: list[str] = field(default_factory=list)
    data: tuple[str, Path] | None = None  # (source, path) for a data case
    note: str = ""
    must_refuse: bool = False  # an input no correct loader accepts


# --- values ----------------------------------------------------------------------

_UNIT_SWAPS = ["nm/m", "ms/Ms", "kg", "%", "V/A", "s", "m", "Hz", "A", "J", "Ohm", "uS", "K", "A/m^2",
               "Ohm*um^2", "furlong", "ns^2", "1/ns", "V*s", "pJ/ns"]
_MALFORMED = ["1..2 ns", "ns", "10 nn", "1e 5 V", "--1", "0x10", "1,5", "∞", "1 ns ns", "1^2 ns", "5 (ns)",
              "1 n s", "nan ns", "1e400 ns", "-0 V", "1e-400 s", " ", "~", "1 ns [nosuchref]", "1 ns [",
              "[zhang2024]", "1_000", "١٢", "1e99999999999999999999"]


def _number_of(value: Any) -> tuple[float, str] | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value), ""
    if isinstance(value, str):
        head, _, unit = value.strip().partition(" ")
        try:
            return float(head), unit
        except ValueError:
            return None
    return None


def field_bounds(section_model, dotted: str) -> list[float]:
    """The numeric bounds (gt, ge, lt, le) of the field at ``dotted`` (YAML keys below the section), if any."""
    from imcsim.config import _model_at

    found = _model_at(section_model, tuple(dotted.split(".")))
    if found is None:
        return []
    model, name = found
    out = []
    for meta in model.model_fields[name].metadata:
        for attr in ("gt", "ge", "lt", "le"):
            v = getattr(meta, attr, None)
            if isinstance(v, int | float) and not isinstance(v, bool):
                out.append(float(v))
    return out


def near_bound(ch: Chooser, bounds: list[float]) -> float:
    """A value at, just inside or just outside one of ``bounds``."""
    b = ch.pick(bounds)
    return ch.pick([b, b * (1 + 1e-9) if b else 1e-300, b * (1 - 1e-9) if b else -1e-300, b * 1.5, b * 0.5])


def hostile_value(ch: Chooser, original: Any, bounds: list[float] | None = None) -> Any:
    """A hostile replacement for ``original`` (a YAML value); ``bounds``: the field's range, when known."""
    if bounds and ch.integer(0, 2) == 0:
        return near_bound(ch, bounds)
    num = _number_of(original)
    kind = ch.pick(["scale", "unit", "malformed", "special", "type", "string", "list", "intfloat"]
                   if num else ["special", "type", "string", "list", "malformed"])
    if kind == "scale" and num:
        x, unit = num
        factor = ch.pick([1e-300, 1e-30, 1e-9, 1e-3, 0.0, -1.0, -1e-12, 1e3, 1e9, 1e30, 1e300, 0.5, 2.0])
        v = x * factor if x else factor
        return f"{v!r} {unit}".strip() if unit else v
    if kind == "unit" and num:
        return f"{num[0]!r} {ch.pick(_UNIT_SWAPS)}"
    if kind == "intfloat" and num:
        x = num[0]
        return int(x) if isinstance(original, float) and math.isfinite(x) and abs(x) < 1e18 else x + 0.5
    if kind == "malformed":
        return ch.pick(_MALFORMED)
    if kind == "special":
        return ch.pick([10**400, -(10**400), 2**63, 2**64 + 1, 1e308, -1e308, 5e-324, float("nan"), float("inf"),
                        float("-inf"), 0, -1, -0.0, 1, 2**31])
    if kind == "type":
        return ch.pick([True, False, None, "", [], {}, {"a": 1}, [1, 2], "yes", "null"])
    if kind == "string":
        return ch.pick(["x" * 10_000, "\x00\x01", "../../etc/passwd", "a/b", "é" * 50, "NaN", "1e3", "cuda",
                        "cost_only", "sram", "repnet", "bitserial_macro", "continual_learning"])
    return ch.pick([[0, 99], [], [-1], [1e30], ["a"], [[1, 2]], [None], list(range(500)), [0, 0], [10**40]])


# --- trees -------------------------------------------------------------------------


def leaves(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every leaf and every mapping of a YAML tree (lists are leaves)."""
    out = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            out.append((key, v))
            out.extend(leaves(v, key))
    return out


def _set_in(tree: dict, dotted: str, value: Any, delete: bool = False) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {}) if isinstance(node, dict) else node
        if not isinstance(node, dict):
            return
    if delete:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


FREE_FORM = ("weight_change_by_layer",)
"""Mappings whose keys the user names."""


def mutate_tree(ch: Chooser, tree: dict, skip: tuple[str, ...] = ()) -> str:
    """Mutate ``tree`` in place; return a note of what changed."""
    keys = [(k, v) for k, v in leaves(tree) if not k.startswith(("references", "description", *skip))]
    key, value = ch.pick(keys)
    how = ch.pick(["value", "value", "value", "delete", "unknown", "section"])
    if how == "delete":
        _set_in(tree, key, None, delete=True)
    elif how == "unknown":
        parent = key.rpartition(".")[0]
        _set_in(tree, f"{parent}.{ch.pick(['colour', 'rows_', 'tmr2', 'x'])}" if parent else "unknown_key", 1)
        if parent.endswith(FREE_FORM):
            how = "added"  # a mapping of names the user chooses: any key is valid
    elif how == "section" and isinstance(value, dict):
        _set_in(tree, key, ch.pick([1, "abc", [1, 2], None, True]))
    else:
        _set_in(tree, key, hostile_value(ch, value))
    return f"{how} {key}"


def _card_tree(path: Path) -> dict:
    tree = yaml.safe_load(path.read_text())
    refs = set(tree.get("references") or {})

    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items()}
        if isinstance(v, list):
            return [strip(x) for x in v]
        if isinstance(v, str) and v.rstrip().endswith("]") and "[" in v:
            head, _, tag = v.rstrip()[:-1].rpartition("[")
            if tag in refs:
                return yaml.safe_load(head) if head.strip() else head
        return v

    return {k: strip(v) if k != "references" else v for k, v in tree.items()}


def _yaml_scalar(raw: Any) -> str:
    """``raw`` as the text of a ``--set`` value."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, float) and not math.isfinite(raw):
        return ".nan" if math.isnan(raw) else ".inf" if raw > 0 else "-.inf"
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    return json.dumps(raw)


def _dump(tree: Any) -> str:
    return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True, width=10**6)


# --- hostile files -----------------------------------------------------------------


REFUSED_TEXTS = ("empty", "binary", "yaml", "dup", "bomb", "deep_list", "deep_map", "list", "bool_schema",
                 "huge_int", "nul", "long_line")
"""Hostile texts no correct loader accepts."""


def hostile_text(ch: Chooser, valid: str) -> tuple[bytes, str]:
    kind = ch.pick([*REFUSED_TEXTS, "tab", "bom", "truncate"])
    return _hostile_text(ch, valid, kind), kind


def _hostile_text(ch: Chooser, valid: str, kind: str) -> bytes:
    if kind == "empty":
        return b""
    if kind == "binary":
        return bytes(range(256)) * 4
    if kind == "yaml":
        return valid.encode() + b"\n  bad: [unclosed\n"
    if kind == "dup":
        first = valid.splitlines()
        key = next((ln.split(":")[0] for ln in first if ln and not ln.startswith((" ", "#")) and ":" in ln), "name")
        return (valid + f"\n{key}: 1\n").encode()
    if kind == "bomb":
        lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
        return (valid + "\n" + "\n".join(lines) + "\n").encode()
    if kind == "deep_list":
        n = ch.pick([100, 1000, 5000])
        return (valid + "\ndeep: " + "[" * n + "]" * n + "\n").encode()
    if kind == "deep_map":
        n = ch.pick([100, 1000, 5000])
        return (valid + "\ndeep: " + "{a: " * n + "1" + "}" * n + "\n").encode()
    if kind == "list":
        return b"- 1\n- 2\n"
    if kind == "bool_schema":
        return valid.replace("schema_version: 1", "schema_version: true").encode()
    if kind == "huge_int":
        return valid.replace("schema_version: 1", "schema_version: " + "9" * 400).encode()
    if kind == "nul":
        return valid.encode()[:50] + b"\x00" + valid.encode()[50:]
    if kind == "tab":
        return valid.replace("  ", "\t").encode()
    if kind == "bom":
        return b"\xef\xbb\xbf" + valid.encode()
    if kind == "truncate":
        return valid.encode()[: ch.integer(0, max(0, len(valid) - 1))]
    return (valid + "\nname: " + "x" * 200_000 + "\n").encode()


def cifar_bytes(ch: Chooser) -> bytes:
    import numpy as np

    kind = ch.pick(["ok", "exec", "labels_big", "labels_neg", "float", "object", "shape", "notdict", "random",
                    "trunc", "missing"])
    data = np.zeros((4, 3072), dtype=np.uint8)
    labels: Any = [0, 1, 2, 3]
    if kind == "exec":
        class Evil:
            def __reduce__(self):
                return (os.system, (f"touch {PWNED}",))

        return pickle.dumps({"data": data, "labels": Evil()})
    if kind == "labels_big":
        labels = [10**30, 1, 2, 3]
    elif kind == "labels_neg":
        labels = [-1, 1, 2, 10]
    elif kind == "float":
        data = data.astype(np.float64)
    elif kind == "object":
        data = data.astype(object)
    elif kind == "shape":
        data = np.zeros((4, 100), dtype=np.uint8)
    elif kind == "notdict":
        return pickle.dumps([1, 2, 3])
    elif kind == "random":
        return bytes(random.Random(ch.integer(0, 1000)).randbytes(500))
    elif kind == "missing":
        return pickle.dumps({"data": data})
    blob = pickle.dumps({b"data": data, b"labels": labels}, protocol=ch.pick([2, 4, 5]))
    return blob[: len(blob) // 2] if kind == "trunc" else blob


def _png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    raw = bytearray(buf.getvalue())
    raw[16:24] = struct.pack(">II", width, height)  # IHDR width and height
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])) & 0xFFFFFFFF)
    return bytes(raw)


def image_bytes(ch: Chooser) -> bytes:
    kind = ch.pick(["ok", "bomb", "notimage", "trunc", "empty"])
    if kind == "ok":
        return _png(1, 1)
    if kind == "bomb":
        return _png(ch.pick([30_000, 100_000, 2**31 - 1]), ch.pick([30_000, 100_000]))
    if kind == "notimage":
        return b"this is not an image\n" * 10
    if kind == "trunc":
        return _png(8, 8)[:40]
    return b""


# --- cases ---------------------------------------------------------------------------


class Generator:
    """Makes cases under ``work`` (one folder per case, reused: each case overwrites the last)."""

    def __init__(self, work: Path):
        self.work = work
        self.base_lib = work / "lib"
        if not self.base_lib.exists():
            for sub in (*SECTIONS.values(), "configs"):
                shutil.copytree(ROOT / sub, self.base_lib / sub)
        self.n = 0

    def _fresh(self) -> Path:
        self.n += 1
        case = self.work / f"case{self.n % 4}"
        if case.exists():
            shutil.rmtree(case)
        for sub in SECTIONS.values():
            (case / sub).mkdir(parents=True)
            for f in (self.base_lib / sub).glob("*.yaml"):
                (case / sub / f.name).symlink_to(f)
        (case / "configs").mkdir()
        return case

    def make(self, ch: Chooser) -> Case:
        kind = ch.pick(["set", "set", "set", "config", "card", "card", "file", "card_name", "from_report", "data"])
        case = self._fresh()
        config_src = ch.pick(CONFIGS)
        config = case / "configs" / config_src.name
        text = config_src.read_text()
        config.write_text(text)
        if kind == "set":
            from imcsim.config import SECTIONS as KINDS
            from imcsim.config import load_config

            loaded = load_config(config_src)
            resolved = {k: v for k, v in loaded.resolved.items() if k != "cards"}
            keys = [k for k, _ in leaves(resolved) if not k.endswith("references") and ".references." not in k]
            sets = []
            for _ in range(ch.pick([1, 1, 1, 2, 3])):
                key = ch.pick([*keys, "device.nosuch", "workload.repnet.side_blocks", "name", "seed",
                               "schema_version", "device.kind", "circuit.kind", "workload.kind", "run.mode"])
                section = key.split(".")[0]
                bounds = []
                if section in KINDS and "." in key:
                    model = KINDS[section][1].get(resolved[section].get("kind"))
                    bounds = field_bounds(model, key.partition(".")[2]) if model else []
                raw = hostile_value(ch, dict(leaves(resolved)).get(key, 1), bounds)
                sets.append(f"{key}={_yaml_scalar(raw)}")
            return Case(kind, config, case, sets, note="--set " + " ".join(x[:80] for x in sets))
        if kind == "config":
            tree = yaml.safe_load(text)
            note = mutate_tree(ch, tree)
            config.write_text(_dump(tree))
            return Case(kind, config, case, note=f"config {note}", must_refuse=note.startswith("unknown"))
        if kind in ("card", "file"):
            section = ch.pick(list(SECTIONS))
            card_name = yaml.safe_load(text)[section]["card"]
            target = case / SECTIONS[section] / f"{card_name}.yaml"
            src = self.base_lib / SECTIONS[section] / f"{card_name}.yaml"
            if kind == "file":
                which = ch.pick(["config", "card"])
                path = config if which == "config" else target
                valid = text if which == "config" else src.read_text()
                path.unlink()
                blob, how = hostile_text(ch, valid)
                path.write_bytes(blob)
                return Case(kind, config, case, note=f"file {which} {how}", must_refuse=how in REFUSED_TEXTS)
            tree = _card_tree(src)
            note = mutate_tree(ch, tree, skip=("kind",) if ch.integer(0, 3) else ())
            target.unlink()
            target.write_text(_dump(tree))
            return Case(kind, config, case, note=f"card {section} {note}", must_refuse=note.startswith("unknown"))
        if kind == "card_name":
            section = ch.pick(list(SECTIONS))
            (case / "folder.yaml").mkdir()
            name = ch.pick(["x" * 300, "y" * 5000 + ".yaml", "../folder.yaml", "../configs", "", " ", "/",
                            "/dev/null", "nosuch", "../../../../../../etc/passwd", "a\x00b", "*", "..",
                            "devices/../" * 50 + "x"])
            return Case(kind, config, case, [f"{section}.card={json.dumps(name)}"], note=f"card name {name[:40]!r}")
        if kind == "from_report":
            config = case / "configs" / "cost.yaml"
            config.write_text((ROOT / "configs" / "sas_mram_repnet_mobilenetv2_cost.yaml").read_text())
            report = case / "report.json"
            which = ch.pick(["folder", "deep", "binary", "missing", "notreport", "empty", "list", "huge_num"])
            if which == "folder":
                report.mkdir()
            elif which == "deep":
                report.write_text("[" * 100_000 + "]" * 100_000)
            elif which == "binary":
                report.write_bytes(bytes(range(256)))
            elif which == "notreport":
                report.write_text(json.dumps({"tables": {"activity": {"x": "y"}}}))
            elif which == "empty":
                report.write_text("")
            elif which == "list":
                report.write_text("[1, 2]")
            elif which == "huge_num":
                report.write_text('{"tables": {"activity": ' + "9" * 5000 + "}}")
            return Case(kind, config, case, [f"workload.cost_only.activity.from_report={report}"],
                        note=f"from_report {which}")
        source = ch.pick(["cifar10", "image_folder"])
        if source == "cifar10":
            batch = case / "data_batch_1"
            batch.write_bytes(cifar_bytes(ch))
            return Case(kind, config, case, data=(source, batch), note="cifar batch")
        folder = case / "images"
        for cls in ("a", "b"):
            (folder / cls).mkdir(parents=True)
            (folder / cls / "0.png").write_bytes(_png(1, 1))
        (folder / "a" / "1.png").write_bytes(image_bytes(ch))
        return Case(kind, config, case, data=(source, folder), note="image folder")


# --- the judge ---------------------------------------------------------------------


def _finite_nonnegative(hw) -> str | None:
    for name, (value, _unit) in hw.device.figures().items():
        if not (isinstance(value, int | float) and math.isfinite(value)):
            return f"device figure {name} = {value!r}"
    for (comp, action), spec in hw.macro.actions.items():
        for what, v in (("energy", spec.cost.energy_j), ("latency", spec.cost.latency_s)):
            if not (math.isfinite(v) and v >= 0):
                return f"{comp}.{action} {what} = {v!r}"
    area = hw.macro.area_m2()
    if not (math.isfinite(area) and area > 0):
        return f"area = {area!r}"
    return None


def judge(case: Case) -> str | None:
    """None when imcsim behaved on ``case``; else what went wrong."""
    from imcsim.errors import InputError

    t0 = time.perf_counter()
    try:
        if case.data is not None:
            from imcsim.workloads import data as data_module
            from imcsim.workloads.data import DataError, source_images

            data_module.load_cifar10.cache_clear()
            data_module.load_image_folder.cache_clear()
            source, path = case.data
            try:
                source_images(source, str(path), 8)
            except DataError as err:
                if str(path) not in str(err):
                    return f"data error does not name the file: {err}"
            if PWNED.exists():
                PWNED.unlink()
                return "a data file ran a command"
            return None
        from imcsim.api import build_hardware
        from imcsim.config import load_config

        loaded = load_config(case.config, case.overrides, library=case.library)
        hw = build_hardware(loaded)
        # looked up, not imported: the script also measures versions of imcsim that have no capacity check
        check = getattr(sys.modules["imcsim.api"], "check_capacity", None)
        if check is not None:
            check(loaded, hw)
        bad = _finite_nonnegative(hw)
        if bad:
            return f"accepted with a bad figure: {bad}"
        if case.must_refuse:
            return f"silently accepted: {case.note}"
    except InputError as err:
        line = str(err)
        if "\n" in line or len(line) > LINE_BUDGET:
            return f"error line not one short line ({len(line)} chars)"
        if not err.file:
            return f"error names no file: {line[:200]}"
        if case.kind in ("set", "config", "card") and not err.key:
            return f"error names no key: {line[:200]}"
    except RecursionError:
        return "RecursionError"
    except (TimeoutError, MemoryError):
        raise
    except Exception as err:  # everything else is a failure of imcsim
        tb = traceback.extract_tb(err.__traceback__)[-1]
        return f"{type(err).__name__} at {Path(tb.filename).name}:{tb.lineno}: {str(err)[:120]}"
    elapsed = time.perf_counter() - t0
    if elapsed > TIME_BUDGET_S:
        return f"took {elapsed:.1f} s"
    return None


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", type=int, default=20, help="print this many distinct failures")
    args = ap.parse_args(argv)
    import resource
    import signal

    resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, resource.RLIM_INFINITY))  # a runaway case: MemoryError

    def hang(*_):
        raise TimeoutError(f"no answer within {4 * TIME_BUDGET_S:.0f} s")

    signal.signal(signal.SIGALRM, hang)
    rng = random.Random(args.seed)
    failures: Counter[str] = Counter()
    examples: dict[str, str] = {}
    kinds: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as work:
        gen = Generator(Path(work))
        t0 = time.perf_counter()
        for _ in range(args.cases):
            case = gen.make(Chooser(rng))
            kinds[case.kind] += 1
            signal.alarm(int(4 * TIME_BUDGET_S))
            try:
                verdict = judge(case)
            except (TimeoutError, MemoryError) as err:
                verdict = f"{type(err).__name__}: {err}"
            signal.alarm(0)
            if verdict:
                sig = verdict.split(":")[0] if " at " in verdict else verdict[:60]
                failures[sig] += 1
                examples.setdefault(sig, f"{case.note} -> {verdict}")
    total = sum(failures.values())
    print(f"{args.cases} cases ({dict(kinds)}), {total} failures ({100 * total / args.cases:.2f} %), "
          f"{time.perf_counter() - t0:.0f} s")
    for sig, n in failures.most_common(args.show):
        print(f"{n:6d}  {examples[sig][:300]}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
