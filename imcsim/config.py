"""Run configs: YAML -> strict, typed :class:`RunConfig`, validated once.

A run config composes three cards and run options::

    schema_version: 1
    name: sas_mram_repnet
    seed: 0
    device:   {card: sas_mram_4mtj_zhang_tcad2024, write: {t_set: 2 ns}}
    circuit:  {card: bitserial_macro_28nm}
    workload: {card: repnet_digits_tiny}

Card resolution rule: in section ``device`` (``circuit``, ``workload``), a
``card`` value that names a file (contains ``/`` or ends in ``.yaml``) is a
path relative to the config file; otherwise it is a card name looked up as
``LIBRARY/devices/NAME.yaml`` (``circuits/``, ``workloads/``), where LIBRARY
is ``--library DIR`` if given, else the nearest folder at or above the config
file that has a ``devices``, ``circuits`` or ``workloads`` folder, else the
folder named by ``$IMCSIM_LIBRARY``, else the built-in library installed with
the package (``imcsim/library``: the shipped cards and configs).

Every other key in a section overrides the card field of the same dotted
path (presets plus per-field overrides). ``--set a.b.c=VALUE`` overrides any
key of the config after that. In cards, a value may carry its source as a
trailing tag, ``100 nm [zhang2024]``; the tag must name an entry of the
card's ``references``.

Every error is an :class:`~imcsim.errors.InputError` naming the file that
set the offending value and the dotted key.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
import math
import os
import re
import typing
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, Field, ValidationError, model_validator

from imcsim import units
from imcsim.circuits import CARD_KINDS as CIRCUIT_KINDS
from imcsim.components.memory import TEMPERATURE_RANGE_K
from imcsim.devices import CARD_KINDS as DEVICE_KINDS
from imcsim.environment import available_cores
from imcsim.errors import FieldError, InputError, UnknownKeyError, shorten
from imcsim.models.sources import file_digest
from imcsim.params import Params, TemperatureK, TimeS, field_dim
from imcsim.registry import load_plugins
from imcsim.workloads import CARD_KINDS as WORKLOAD_KINDS

SCHEMA_VERSION = 1
SECTIONS: dict[str, tuple[str, Mapping[str, type[Params]]]] = {
    "device": ("devices", DEVICE_KINDS),
    "circuit": ("circuits", CIRCUIT_KINDS),
    "workload": ("workloads", WORKLOAD_KINDS),
}
_SOURCE_TAG = re.compile(r"^(.*?)\s*\[([A-Za-z0-9_.\-]+)\]\s*$")


class RunOptions(Params):
    """Section ``run``: how the workload executes."""

    mode: Literal["functional", "cost_only"] = Field(
        "functional", description="functional: real data and training; cost_only: shapes and activity statistics only"
    )
    torch_device: Literal["auto", "cpu", "cuda"] = Field(
        "cpu", description="where functional training runs (auto: CUDA when present; adaptation workloads train on "
                           "the CPU). Another device trains with other kernels, so its accuracy and counts differ "
                           "in the last digits: ask for it by name")
    threads: int = Field(
        1, ge=1, le=4096, description="threads of the run's arithmetic (torch, OpenMP, BLAS, numba). A functional "
                                      "run's numbers depend on it (a sum over more threads adds in another order); "
                                      "1 reproduces on any machine")
    temperature_k: TemperatureK = Field(
        300.0, alias="temperature", ge=TEMPERATURE_RANGE_K[0], le=TEMPERATURE_RANGE_K[1],
        description="junction temperature: sets the leakage of the arrays, the buffer and the logic (-40 to 125 C)")
    errors: Literal["inject", "none"] = Field(
        "inject", description="functional runs: inject the device's write errors, half-select and read-disturb flips "
                              "into the stored bits with a seeded generator (none: an error-free run to compare)")
    train_time_per_day_s: TimeS = Field(
        3600.0, alias="train_time_per_day", gt=0.0, le=86400.0,
        description="duty cycle: time spent training per day; the rest of the day the chip holds its trained state "
                    "(energy_per_day_j)")

    @model_validator(mode="after")
    def _threads(self) -> RunOptions:
        cores = available_cores()
        if self.threads > cores:
            raise FieldError("threads", f"this machine has {cores} core(s) (got {self.threads}); give 1..{cores}")
        return self


class ChipPlacement(Params):
    """Section ``chip.placement``: which macro stores each layer's weights."""

    policy: Literal["single", "trainable", "by_name"] = Field(
        "single", description="single: every layer in the main macro (device + circuit); trainable: the layers whose "
                              "weights train in the macro named by 'macro'; by_name: each layer in the macro of the "
                              "first glob of 'layers' its name matches (else the main macro)")
    macro: str | None = Field(None, description="the macro of the trainable layers (policy trainable)")
    layers: dict[str, str] = Field(default_factory=dict, description="layer-name glob -> macro (policy by_name); "
                                   "'main' names the main macro")


class ChipOptions(Params):
    """Section ``chip``: further macros beside the main one (``device`` + ``circuit``), each a device card and a
    circuit card (default: the main circuit card), sharing the main circuit's buffer, DRAM and digital unit."""

    macros: dict[str, Any] = Field(default_factory=dict, description="name -> {device: {card: ...}, circuit: "
                                   "{card: ...}}")
    placement: ChipPlacement = ChipPlacement()

    @model_validator(mode="after")
    def _names(self) -> ChipOptions:
        bad = [n for n in self.macros if n == "main" or not n.isidentifier()]
        if bad:
            raise FieldError(f"macros.{bad[0]}", "a macro name is a plain identifier and not 'main'")
        p = self.placement
        known = sorted(self.macros)
        if p.policy == "trainable" and p.macro not in self.macros:
            raise FieldError("placement.macro", f"names no macro of chip.macros (got {shorten(p.macro)}; "
                                                f"have: {', '.join(known) or 'none'})")
        for glob, name in p.layers.items():
            if name != "main" and name not in self.macros:
                raise FieldError(f"placement.layers.{glob}", f"names no macro (got {shorten(name)}; have: main"
                                                             f"{''.join(', ' + k for k in known)})")
        if p.policy == "by_name" and not p.layers:
            raise FieldError("placement.layers", "policy by_name needs at least one glob -> macro")
        return self


MAX_NAME_BYTES = 200
"""Longest run name (UTF-8 bytes): the name becomes a folder, and its hidden siblings add a few characters
to it within the 255 bytes most file systems allow."""


def safe_name(name: str) -> str:
    """Check that ``name`` can be a folder name on its own: no path separators, no control characters, not
    hidden (no leading dot, so never ``.`` or ``..``), not too long."""
    if "/" in name or "\\" in name:
        raise ValueError(f"must be a plain file name without '/' or '\\' (got {shorten(name)})")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise ValueError(f"must not hold control or unprintable characters (got {shorten(name)})")
    if name.startswith(".") or name != name.strip():
        raise ValueError(f"must not start with '.' nor start or end with a space (got {shorten(name)})")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError(f"must be at most {MAX_NAME_BYTES} bytes long (got {len(name.encode('utf-8'))})")
    return name


TARGET_TOLERANCE_MAX = 2.0
"""Loosest agreement a published target may ask for: a simulated figure within a factor of 2 of it."""


class Target(Params):
    """A published figure the config's run is held to (``targets.METRIC``): its value in the metric's unit, the
    reference it comes from (a key of the config's ``references``), the factor within which the simulated figure
    must land, and what the published figure was measured at."""

    value: float = Field(gt=0.0, allow_inf_nan=False, description="the published figure, in the metric's unit")
    source: str = Field(min_length=1, description="key of the config's references that publishes it")
    tolerance: float = Field(ge=1.0, le=TARGET_TOLERANCE_MAX, description="the simulated figure must lie within "
                             "[value / tolerance, value x tolerance]")
    conditions: str = Field("", description="what the published figure was measured at (precision, supply, "
                            "activity)")


class RunConfig(Params):
    """A fully resolved, validated run config."""

    schema_version: Literal[1]
    name: Annotated[str, AfterValidator(safe_name)] = Field(
        min_length=1, description="run name, also the default output folder out/NAME: a plain file name")
    description: str = ""
    seed: int = Field(0, ge=0, lt=2**32)
    device: Any
    circuit: Any
    workload: Any
    run: RunOptions = RunOptions()
    chip: ChipOptions = ChipOptions()
    references: dict[str, str] = Field(default_factory=dict, description="sources the config cites, by key")
    targets: dict[str, Target] = Field(default_factory=dict, description="published figures the run is held to, "
                                       "by metric name (imcsim validate --targets)")
    not_modelled: list[str] = Field(default_factory=list, description="what of the published design the config "
                                    "does not model")

    @model_validator(mode="after")
    def _sourced(self) -> RunConfig:
        for name, target in self.targets.items():
            if target.source not in self.references:
                raise FieldError(f"targets.{name}.source", f"{target.source!r} is not a key of the config's "
                                 "references; a target must cite where it was published ("
                                 + (", ".join(self.references) or "no references given") + ")")
        return self


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config plus where each of its values came from."""

    config: RunConfig
    path: Path
    cards: dict[str, str]
    resolved: dict[str, Any]
    origins: dict[str, str] = field(repr=False)

    def where(self, dotted: str) -> str:
        """The file (or ``--set``/``--seed``) that set the value at ``dotted``."""
        return _origin_finder(self.origins, _display(self.path))(dotted)

    @property
    def config_hash(self) -> str:
        """SHA-256 of the resolved config (canonical JSON), first 16 hex digits. The card paths are left out:
        the cards' contents are in the resolved config, and the same config hashes alike however its path
        is spelled or wherever it is run from."""
        physics = {k: v for k, v in self.resolved.items() if k not in ("cards", "model_files")}
        files = self.resolved.get("model_files", {})
        if files:  # a model file hashes by its content, not by where it lies
            physics = copy.deepcopy(physics)
            model = physics.get("workload", {}).get("model", {})
            for key, digest in files.items():
                model[key] = digest
        blob = json.dumps(physics, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# --- YAML and library --------------------------------------------------------


def _display(path: Path) -> str:
    """``path`` as the user reaches it: relative to the working folder when below it, links not resolved."""
    try:
        return str(Path(os.path.abspath(path)).relative_to(Path(os.path.abspath(Path.cwd()))))
    except ValueError:
        return str(path)


MAX_YAML_BYTES = 8 * 2**20
"""Largest config or card file read (a card is a few kB)."""
MAX_YAML_DEPTH = 64
"""Deepest nesting of mappings and lists in one YAML text."""
MAX_YAML_NODES = 200_000
"""Most values one YAML text may expand to, aliases expanded (an alias bomb of a few hundred bytes expands to
billions)."""


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping (YAML itself keeps the last)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:
                    continue  # an unhashable key: the base class reports it
                if not duplicate:
                    seen[key] = key_node.start_mark.line + 1
                else:
                    first = seen[key]
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {shorten(key)} given twice in one mapping (first on line {first})",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


class YamlLimitError(yaml.YAMLError):
    """A YAML text beyond the nesting or expansion limits."""

    def __init__(self, problem: str, line: int | None):
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = None if line is None else yaml.Mark("", 0, line, 0, None, None)


def load_yaml_text(text: str) -> Any:
    """Parse one YAML document with the project's limits: no duplicate keys, nesting at most
    :data:`MAX_YAML_DEPTH`, at most :data:`MAX_YAML_NODES` values with aliases expanded. Raises a
    :class:`yaml.YAMLError` (with ``problem`` and ``problem_mark``) on any problem."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):  # an event stream: no recursion, no expansion
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise YamlLimitError(f"nested more than {MAX_YAML_DEPTH} levels deep", event.start_mark.line)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        sizes: dict[int, int] = {}

        def size(n) -> int:
            if id(n) not in sizes:
                children = [c for kv in n.value for c in kv] if isinstance(n, yaml.MappingNode) else \
                    n.value if isinstance(n, yaml.SequenceNode) else []
                sizes[id(n)] = 1 + sum(size(c) for c in children)
            return sizes[id(n)]

        if size(node) > MAX_YAML_NODES:
            raise YamlLimitError(f"expands to {size(node):,} values through its aliases (at most "
                                 f"{MAX_YAML_NODES:,})", None)
        return loader.construct_document(node)
    finally:
        loader.dispose()


@functools.lru_cache(maxsize=256)
def _parse_yaml(text: str) -> Any:
    """Parsed YAML of a text (kept: a sweep reads the same cards at every point; callers get a copy)."""
    return load_yaml_text(text)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a one-line InputError."""
    shown = _display(path)
    try:
        if not path.is_file():
            raise InputError("no such file" if not path.exists() else "not a file", file=shown)
        if path.stat().st_size > MAX_YAML_BYTES:
            raise InputError(f"larger than {MAX_YAML_BYTES // 2**20} MiB: not a config or card", file=shown)
        data = copy.deepcopy(_parse_yaml(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise InputError(f"{where}{problem}", file=shown) from None
    except UnicodeDecodeError:
        raise InputError("not a UTF-8 text file", file=shown) from None
    except OSError as err:
        raise InputError(f"cannot read: {err.strerror or err}", file=shown) from None
    if not isinstance(data, dict):
        raise InputError("must be a YAML mapping of keys to values", file=shown)
    return data


BUILTIN_LIBRARY = Path(__file__).resolve().parent / "library"
"""The shipped cards and configs, installed with the package."""
LIBRARY_ENV = "IMCSIM_LIBRARY"
"""Environment variable naming a library folder, used when no library lies at or above the config."""


def find_library(start: Path, explicit: Path | None = None) -> Path:
    """The card library for a config at ``start`` (see the module docstring)."""
    if explicit is not None:
        if not explicit.is_dir():
            raise InputError(f"{shorten(str(explicit))} is not a folder (give the folder holding devices/, "
                             "circuits/, workloads/)", key="--library")
        return explicit
    here = Path(os.path.abspath(start))  # not resolved: a config reached through a link finds cards beside the link
    here = here if here.is_dir() else here.parent
    for folder in (here, *here.parents):
        if any((folder / sub).is_dir() for sub, _ in SECTIONS.values()):
            return folder
    env = os.environ.get(LIBRARY_ENV)
    if env:
        if not Path(env).is_dir():
            raise InputError(f"{shorten(env)} is not a folder (give the folder holding devices/, circuits/, "
                             "workloads/)", key=LIBRARY_ENV)
        return Path(env)
    return BUILTIN_LIBRARY


def list_cards(library: Path, section: str) -> list[Path]:
    sub, _ = SECTIONS[section]
    return sorted((library / sub).glob("*.yaml")) if (library / sub).is_dir() else []


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _resolve_card_path(section: str, card: Any, config_path: Path, library: Path, shown: str) -> Path:
    key = f"{section}.card"
    if not isinstance(card, str) or not card.strip():
        raise InputError("must be a card name or a path to a card file", file=shown, key=key)
    return _card_path(section, card, config_path, library, shown, key)


def _card_path(section: str, card: str, config_path: Path, library: Path, shown: str, key: str) -> Path:
    return _lookup(card, config_path.parent, library / SECTIONS[section][0], "card", shown, key)


def _lookup(card: str, relative_to: Path, folder: Path, what: str, shown: str, key: str) -> Path:
    """The file of a card given by name (``folder/NAME.yaml``) or by path (relative to ``relative_to``); a name
    the file system refuses (too long, ...) is an input error like a missing card."""
    try:
        return _find(card, relative_to, folder, what, shown, key)
    except OSError as err:
        raise InputError(f"cannot read {what} {shorten(card)}: {err.strerror or err}", file=shown, key=key) from None


def _find(card: str, relative_to: Path, folder: Path, what: str, shown: str, key: str) -> Path:
    if "\0" in card:
        raise InputError(f"must be a {what} name or a path to a {what} file (got {shorten(card)})", file=shown,
                         key=key)
    if "/" in card or card.endswith((".yaml", ".yml")):
        path = (relative_to / card).resolve()
        if not path.is_file():
            raise InputError(f"no {what} file at {shorten(str(path), 200)}", file=shown, key=key)
        return path
    path = folder / f"{card}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        raise InputError(f"no {what} {shorten(card)} in {folder}{_did_you_mean(card, names)} "
                         f"(available: {', '.join(names) or 'none'})", file=shown, key=key)
    return path


# --- trees ---------------------------------------------------------------


def _strip_sources(tree: Any, refs: Mapping[str, str], shown: str, prefix: str) -> Any:
    """Remove ``[ref]`` tags from card leaves, checking each names a reference.

    ``prefix`` is the dotted location of ``tree`` (the section name for a whole card).
    """
    if isinstance(tree, dict):
        return {k: _strip_sources(v, refs, shown, f"{prefix}.{k}" if prefix else str(k)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_strip_sources(v, refs, shown, f"{prefix}[{i}]") for i, v in enumerate(tree)]
    if isinstance(tree, str) and prefix.rpartition(".")[2] not in ("references", "description") and \
            ".references." not in f".{prefix}.":
        m = _SOURCE_TAG.match(tree)
        if m:
            value, ref = m.group(1), m.group(2)
            if ref not in refs:
                raise InputError(
                    f"source tag [{ref}] names no entry of 'references'{_did_you_mean(ref, list(refs))}",
                    file=shown,
                    key=prefix,
                )
            try:
                return copy.deepcopy(_parse_yaml(value)) if value else value
            except yaml.YAMLError:
                return value
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any], origin: str, origins: dict[str, str], prefix: str) -> None:
    for k, v in over.items():
        key = f"{prefix}.{k}"
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v, origin, origins, key)
        else:
            base[k] = copy.deepcopy(v)
            _forget(origins, key)
            _record(v, origin, origins, key)


def _forget(origins: dict[str, str], prefix: str) -> None:
    """Drop the origins of the values under ``prefix`` (a value replaced them)."""
    for key in [k for k in origins if k.startswith(f"{prefix}.")]:
        del origins[key]


def _record(tree: Any, origin: str, origins: dict[str, str], prefix: str) -> None:
    origins[prefix] = origin
    if isinstance(tree, dict):
        for k, v in tree.items():
            _record(v, origin, origins, f"{prefix}.{k}")


def parse_set(item: str) -> tuple[list[str], Any]:
    """``'device.write.t_set=2 ns'`` -> (['device', 'write', 't_set'], '2 ns')."""
    if "=" not in item:
        raise InputError(f"expected KEY=VALUE, e.g. device.write.t_set=2ns (got {shorten(item)})", file="--set",
                         key=shorten(item, 40).strip("'"))
    key, _, raw = item.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise InputError(f"the key must be dotted names, e.g. circuit.array.rows (got {shorten(item)})",
                         file="--set", key=shorten(key.strip(), 80).strip("'") or None)
    try:
        value = load_yaml_text(raw) if raw.strip() else ""
    except YamlLimitError as err:
        raise InputError(f"the value is {err.problem}", file="--set", key=key.strip()) from None
    except yaml.YAMLError:
        value = raw
    return parts, value


def _apply_set(tree: dict[str, Any], parts: list[str], value: Any, origins: dict[str, str],
               prefix: str = "") -> None:
    """Set ``tree[parts...] = value``; origins are recorded under ``prefix.parts``."""
    dotted = [prefix] if prefix else []
    node = tree
    for i, p in enumerate(parts[:-1]):
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
            origins[".".join(dotted + parts[: i + 1])] = "--set"
        if not isinstance(nxt, dict):
            raise InputError(f"holds a value, not a section, so '{'.'.join(parts)}' cannot be set", file="--set",
                             key=".".join(dotted + parts[: i + 1]))
        node = nxt
    node[parts[-1]] = value
    _forget(origins, ".".join(dotted + parts))
    _record(value, "--set", origins, ".".join(dotted + parts))


# --- validation -----------------------------------------------------------


def _aliases(model: type[BaseModel]) -> dict[str, str]:
    return {(f.alias or name): name for name, f in model.model_fields.items()}


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        m = _nested_model(arg)
        if m is not None:
            return m
    return None


def _check_keys(model: type[BaseModel], data: Any, prefix: str, where) -> None:
    """Reject unknown keys before pydantic, with a did-you-mean and the valid keys."""
    if not isinstance(data, dict):
        return
    aliases = _aliases(model)
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in aliases:
            valid = sorted(aliases)
            raise UnknownKeyError(
                f"unknown key '{key}'{_did_you_mean(str(key), valid)} (valid: {', '.join(valid)})",
                file=where(dotted),
                key=dotted,
            )
        info = model.model_fields[aliases[key]]
        origin = typing.get_origin(info.annotation)
        sub = _nested_model(info.annotation)
        if sub is not None and origin not in (dict, list):
            _check_keys(sub, value, dotted, where)
        elif origin is list and sub is not None and isinstance(value, list):
            for i, item in enumerate(value):
                _check_keys(sub, item, f"{dotted}[{i}]", where)


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[type[BaseModel], str] | None:
    """Follow an error location through nested models to (model, field name)."""
    current = model
    for i, part in enumerate(loc):
        if isinstance(part, int):
            continue
        aliases = _aliases(current)
        name = aliases.get(part, part)
        if name not in current.model_fields:
            return None
        if i == len(loc) - 1:
            return current, name
        sub = _nested_model(current.model_fields[name].annotation)
        if sub is None:
            return None
        current = sub
    return None


def _bound_text(bound: Any, model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    found = _model_at(model, loc)
    dim = field_dim(*found) if found else None
    symbol = units.DIM_SYMBOLS.get(dim) if dim is not None else None
    if symbol and isinstance(bound, int | float):
        return units.format_si(float(bound), symbol)
    if isinstance(bound, int | float):
        return f"{bound:g}"
    return str(bound)


def _message(err: Mapping[str, Any], model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    got = err.get("input")
    got_text = f" (got {shorten(got)})" if not isinstance(got, dict | list) else ""
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        bound = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {_bound_text(bound, model, loc)}{got_text}"
    if kind == "missing":
        return "missing (required)"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}{got_text}"
    msg = str(err["msg"])
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "value_error":
        return msg
    return f"{msg[0].lower()}{msg[1:]}{got_text}"


def validate_model(model: type[BaseModel], data: Any, prefix: str, where) -> Any:
    """Validate ``data`` as ``model``; raise a one-line InputError on the first problem."""
    _check_keys(model, data, prefix, where)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        err = errors[0]
        loc = tuple(err["loc"])
        blamed = (err.get("ctx") or {}).get("error")
        if isinstance(blamed, FieldError):
            loc = (*loc, *blamed.key.split("."))
        dotted = ".".join([prefix] if prefix else []) + "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc
        )
        dotted = dotted.lstrip(".") or prefix
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InputError(_message(err, model, loc) + more, file=where(dotted), key=dotted) from None


def _origin_finder(origins: Mapping[str, str], default: str):
    def where(dotted: str) -> str:
        key = re.sub(r"\[\d+\]", "", dotted)
        while key:
            if key in origins:
                return origins[key]
            key = key.rpartition(".")[0]
        return default

    return where


def _chip_macros(tree: dict[str, Any]) -> dict[str, dict[str, Any]]:
    chip = tree.get("chip")
    macros = chip.get("macros") if isinstance(chip, dict) else None
    return macros if isinstance(macros, dict) else {}


def _resolve_chip(tree: dict[str, Any], main_circuit: Any, config_path: Path, library: Path,
                  origins: dict[str, str], shown: str) -> dict[str, str]:
    """Read the device and circuit cards of each ``chip.macros.NAME`` (a macro without a circuit takes the main
    circuit section: its card and overrides), recording origins under ``chip.macros.NAME.<device|circuit>``;
    returns the card files read, by key."""
    read: dict[str, str] = {}
    chip = tree["chip"]
    if not isinstance(chip, dict):
        raise InputError(f"must be a mapping with macros and placement (got {shorten(chip)})", file=shown, key="chip")
    macros = chip.get("macros", {})
    if not isinstance(macros, dict):
        raise InputError(f"must be a mapping of name -> macro (got {shorten(macros)})", file=shown,
                         key="chip.macros")
    for name, macro in macros.items():
        prefix = f"chip.macros.{name}"
        if not isinstance(macro, dict) or "device" not in macro:
            raise InputError("must be a mapping with a 'device' (and optionally a 'circuit') section",
                             file=shown, key=prefix)
        entries = {"device": macro["device"],
                   "circuit": macro.get("circuit", copy.deepcopy(main_circuit))}
        for part, value in entries.items():
            key = f"{prefix}.{part}"
            if not isinstance(value, dict) or "card" not in value:
                raise InputError("must be a mapping with a 'card' key (a card name or path)", file=shown, key=key)
            card_path = _card_path(part, value["card"], config_path, library, shown, f"{key}.card") \
                if isinstance(value["card"], str) and value["card"].strip() else None
            if card_path is None:
                raise InputError("must be a card name or a path to a card file", file=shown, key=f"{key}.card")
            body, card_shown = _read_card(card_path, key)
            _record(body, card_shown, origins, key)
            _merge(body, {k: v for k, v in value.items() if k != "card"}, shown, origins, key)
            macro[part] = body
            read[key] = card_shown
        macro["_circuit_path"] = card_path
    return read


def _validate_section(section: str, tree: dict[str, Any], where, prefix: str | None = None) -> Params:
    _, kinds = SECTIONS[section]
    prefix = prefix or section
    if not isinstance(tree, dict):
        raise InputError(f"must be a mapping of card fields (got {shorten(tree)})", file=where(prefix), key=prefix)
    kind = tree.get("kind")
    if not isinstance(kind, str) or kind not in kinds:
        hint = _did_you_mean(str(kind), list(kinds)) if isinstance(kind, str) else ""
        raise InputError(
            f"must be one of {sorted(kinds)}{hint} (got {shorten(kind)})", file=where(f"{prefix}.kind"),
            key=f"{prefix}.kind"
        )
    try:
        return validate_model(kinds[kind], tree, prefix, where)
    except UnknownKeyError as err:
        kind_origin = where(f"{prefix}.kind")
        if kind_origin == err.file:
            raise
        raise UnknownKeyError(f"{err.message}: {section}.kind is {kind!r}, set by {kind_origin}, and a {kind} card has "
                              f"no such key", file=err.file, key=err.key) from None


def load_config(
    path: str | Path,
    overrides: list[str] | None = None,
    *,
    seed: int | None = None,
    library: str | Path | None = None,
) -> LoadedConfig:
    """Load, resolve and validate a run config. Raises InputError on any problem."""
    load_plugins()
    path = Path(path)
    shown = _display(path)
    raw = read_yaml(path)
    lib = find_library(path, Path(library) if library else None)
    origins: dict[str, str] = {}
    tree: dict[str, Any] = {}
    cards: dict[str, str] = {}
    card_paths: dict[str, Path] = {}
    top_valid = sorted(_aliases(RunConfig))
    # `--set device.card=NAME` swaps a section's card before cards are resolved.
    card_sets: dict[str, Any] = {}
    rest_sets: list[str] = []
    for item in overrides or []:
        parts, value = parse_set(item)
        if len(parts) == 2 and parts[0] in SECTIONS and parts[1] == "card":
            card_sets[parts[0]] = value
        elif len(parts) == 5 and parts[:2] == ["chip", "macros"] and parts[3] in SECTIONS and parts[4] == "card":
            _apply_set(raw, parts, value, {}, "")  # a macro's card, swapped before cards are resolved
        else:
            rest_sets.append(item)
    for section, card in card_sets.items():
        current = raw.get(section)
        raw[section] = {**(current if isinstance(current, dict) else {}), "card": card}
    for key, value in raw.items():
        if key not in top_valid:
            raise UnknownKeyError(
                f"unknown key '{key}'{_did_you_mean(str(key), top_valid)} (valid: {', '.join(top_valid)})",
                file=shown,
                key=str(key),
            )
        if key in SECTIONS:
            if not isinstance(value, dict) or "card" not in value:
                raise InputError("must be a mapping with a 'card' key (a card name or path)", file=shown, key=key)
            card_file = "--set" if key in card_sets else shown
            card_path = _resolve_card_path(key, value["card"], path, lib, card_file)
            card_paths[key] = card_path
            body, card_shown = _read_card(card_path, key)
            _record(body, card_shown, origins, key)
            origins[f"{key}.card"] = card_file
            section_over = {k: v for k, v in value.items() if k != "card"}
            _merge(body, section_over, shown, origins, key)
            tree[key] = body
            cards[key] = card_shown
        else:
            tree[key] = copy.deepcopy(value)
            _record(value, shown, origins, key)
    if "chip" in tree:
        cards.update(_resolve_chip(tree, raw.get("circuit"), path, lib, origins, shown))
    for item in rest_sets:
        parts, value = parse_set(item)
        if parts[0] in SECTIONS and parts[0] not in tree:
            raise InputError(f"section '{parts[0]}' has no card in the config", file="--set", key=".".join(parts))
        _apply_set(tree, parts, value, origins)
    if seed is not None:
        tree["seed"] = seed
        origins["seed"] = "--seed"
    where = _origin_finder(origins, shown)
    model_files = _resolve_model_files(tree, where)
    if isinstance(tree.get("circuit"), dict):
        resolve_components(tree["circuit"], "circuit", card_paths.get("circuit", path), lib, origins, where)
    for name, macro in _chip_macros(tree).items():
        key = f"chip.macros.{name}.circuit"
        if isinstance(macro.get("circuit"), dict):
            resolve_components(macro["circuit"], key, macro.pop("_circuit_path", path), lib, origins, where)
    _check_numbers(tree, "", where)
    _check_schema_version(tree.get("schema_version"), where("schema_version"))
    typed: dict[str, Any] = {}
    for section in SECTIONS:
        if section not in tree:
            raise InputError("missing (required): give a mapping with a 'card' key", file=shown, key=section)
        typed[section] = _validate_section(section, tree[section], where)
    for name, body in _chip_macros(tree).items():
        unknown = sorted(set(body) - {"device", "circuit"})
        if unknown:
            key = f"chip.macros.{name}.{unknown[0]}"
            raise UnknownKeyError(f"unknown key '{unknown[0]}' (valid: circuit, device)", file=where(key), key=key)
    macros = {name: {part: _validate_section(part, body[part], where, prefix=f"chip.macros.{name}.{part}")
                     for part in ("device", "circuit")} for name, body in _chip_macros(tree).items()}
    rest = {k: v for k, v in tree.items() if k not in SECTIONS}
    base = validate_model(RunConfig, {**rest, **{s: {} for s in SECTIONS}}, "", where)
    config = base.model_copy(update=typed)
    if macros:
        config = config.model_copy(update={"chip": config.chip.model_copy(update={"macros": macros})})
    resolved = {
        **{k: v for k, v in base.model_dump(mode="json", by_alias=True).items() if k not in SECTIONS},
        **{s: typed[s].model_dump(mode="json", by_alias=True) for s in SECTIONS},
        "cards": cards,
    }
    if macros:
        resolved["chip"]["macros"] = {name: {part: card.model_dump(mode="json", by_alias=True)
                                             for part, card in m.items()} for name, m in macros.items()}
    elif not tree.get("chip"):
        resolved.pop("chip", None)  # a single-macro run hashes as before the chip section existed
    if model_files:
        resolved["model_files"] = model_files
    return LoadedConfig(config=config, path=path, cards=cards, resolved=resolved, origins=origins)


def _resolve_model_files(tree: dict[str, Any], where) -> dict[str, str]:
    """Make ``workload.model.path`` and a file ``workload.model.factory`` absolute, relative to the file that
    set them (the working folder for ``--set``); returns key -> ``sha256:<digest>`` of each file found."""
    workload = tree.get("workload")
    model = workload.get("model") if isinstance(workload, dict) else None
    if not isinstance(model, dict):
        return {}
    digests = {}
    for key in ("path", "factory"):
        value = model.get(key)
        if not isinstance(value, str) or not value:
            continue
        file, sep, attr = value.rpartition(":") if key == "factory" else (value, "", "")
        if key == "factory" and not file.endswith(".py"):
            continue
        origin = where(f"workload.model.{key}")
        base = Path.cwd() if origin.startswith("--") else Path(origin).parent
        target = Path(file) if Path(file).is_absolute() else base / file
        model[key] = f"{target}{sep}{attr}"
        try:
            if target.is_file():
                digests[key] = f"sha256:{file_digest(target)}{sep}{attr}"
        except OSError:
            pass
    return digests


MAX_INT = 2**63 - 1
"""Largest integer any config value may hold (every count, size and seed fits far below it)."""


def _check_numbers(tree: Any, prefix: str, where) -> None:
    """Refuse integers no model can evaluate and non-finite numbers anywhere in a tree, naming the key."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            _check_numbers(v, f"{prefix}.{k}" if prefix else str(k), where)
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            _check_numbers(v, f"{prefix}[{i}]", where)
    elif isinstance(tree, int) and not isinstance(tree, bool) and abs(tree) > MAX_INT:
        raise InputError(f"{shorten(tree)} is too large (integers are at most 2^63 - 1)", file=where(prefix),
                         key=prefix)
    elif isinstance(tree, float) and not math.isfinite(tree):
        raise InputError(f"must be a finite number (got {tree!r})", file=where(prefix), key=prefix)


def _check_schema_version(value: Any, shown: str) -> None:
    if type(value) is not int or value != SCHEMA_VERSION:  # True == 1 in Python; a boolean is not a version
        raise InputError(f"must be {SCHEMA_VERSION} (got {shorten(value)})", file=shown, key="schema_version")


def _read_card(path: Path, section: str) -> tuple[dict[str, Any], str]:
    """A card file's body with source tags stripped (``schema_version`` checked and removed)."""
    raw = read_yaml(path)
    shown = _display(path)
    _check_schema_version(raw.get("schema_version"), shown)
    refs = raw.get("references") or {}
    if not isinstance(refs, dict):
        raise InputError("must be a mapping of key -> citation", file=shown, key="references")
    body = _strip_sources({k: v for k, v in raw.items() if k != "schema_version"}, refs, shown, section)
    comps = body.get("components")
    if isinstance(comps, dict):  # a component given by name only: the mapping form, so overrides merge into it
        body["components"] = {role: {"card": e} if isinstance(e, str) else e for role, e in comps.items()}
    return body, shown


COMPONENT_FOLDER = "components"
"""Component cards live in this folder of the circuit cards' folder (``circuits/components/``)."""


def resolve_components(body: dict[str, Any], prefix: str, card_path: Path, library: Path, origins: dict[str, str],
                       where) -> None:
    """Fill each ``components.ROLE`` entry of a circuit card body from the component card it names.

    An entry is a mapping with ``card`` (a component card name, looked up in the library's
    ``circuits/components/``, or a path relative to the circuit card) and per-field overrides, which win
    over the component card's fields. Origins of the component card's fields are recorded, so an error
    names the component card file.
    """
    comps = body.get("components")
    if comps is None:
        return
    if not isinstance(comps, dict):
        key = f"{prefix}.components"
        raise InputError(f"must be a mapping of role -> component card (got {shorten(comps)})", file=where(key),
                         key=key)
    for role, entry in comps.items():
        key = f"{prefix}.components.{role}"
        if not isinstance(entry, dict) or not isinstance(entry.get("card"), str) or not entry["card"].strip():
            raise InputError(f"must be a component card name or a mapping with a 'card' key (got {shorten(entry)})",
                             file=where(key), key=key)
        path = _lookup(entry["card"], card_path.parent, library / SECTIONS["circuit"][0] / COMPONENT_FOLDER,
                       "component card", where(f"{key}.card"), f"{key}.card")
        card_body, card_shown = _read_card(path, key)
        found: dict[str, str] = {}
        _record(card_body, card_shown, found, key)
        for k, v in found.items():
            origins.setdefault(k, v)
        comps[role] = _overlaid(card_body, entry)


def _overlaid(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _overlaid(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def load_card(section: str, card: str, overrides: list[str] | None = None, *,
              library: str | Path | None = None) -> tuple[Params, Any]:
    """Load one card by name or path (relative to the working folder), with ``--set``-style
    overrides given relative to the card (``write.t_set=2ns``) or as run takes them (``device.write.t_set=2ns``).

    Returns the validated card and a ``where(dotted_key) -> file`` function for errors.
    """
    load_plugins()
    base = Path.cwd() / "_"
    lib = find_library(base, Path(library) if library else None)
    path = _resolve_card_path(section, card, base, lib, "command line")
    body, shown = _read_card(path, section)
    origins: dict[str, str] = {}
    _record(body, shown, origins, section)
    for item in overrides or []:
        parts, value = parse_set(item)
        if len(parts) > 1 and parts[0] == section:  # the same key as run and sweep take: device.write.t_set
            parts = parts[1:]
        _apply_set(body, parts, value, origins, prefix=section)
    where = _origin_finder(origins, shown)
    if section == "circuit":
        resolve_components(body, section, path, lib, origins, where)
    return _validate_section(section, body, where), where
