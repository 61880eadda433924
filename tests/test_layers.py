"""The layers of docs/architecture.md import downward only."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "imcsim"
LAYERS = [
    {"imcsim", "errors", "registry", "environment"},
    {"units"},
    {"params", "files"},
    {"actions"},
    {"ops"},
    {"devices"},
    {"components"},
    {"circuits"},
    {"chip"},
    {"workloads", "models"},
    {"methods"},
    {"sim", "cost"},
    {"config"},
    {"metrics"},
    {"report", "plots"},
    {"compare"},
    {"api"},
    {"sweep"},
    {"cli"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _part(module: str) -> str:
    """``imcsim.circuits.macro`` -> ``circuits``; ``imcsim`` -> ``imcsim``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "imcsim":
            found |= {f"imcsim.{a.name}" for a in node.names} if node.module == "imcsim" else {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "imcsim"}
    return found


def _modules() -> list:
    """The package's modules: its .py files outside the card library (whose .py files are user-model factories
    the reference configs name, data rather than code of the package)."""
    return [p for p in PACKAGE.rglob("*.py") if "library" not in p.relative_to(PACKAGE).parts]


def test_every_module_has_a_layer():
    parts = {_part(".".join(("imcsim", *p.relative_to(PACKAGE).with_suffix("").parts))) for p in _modules()}
    assert parts - {"__init__"} <= set(RANK), sorted(parts - set(RANK))


def test_layers_import_downward_only():
    upward = []
    for path in sorted(_modules()):
        rel = path.relative_to(PACKAGE).with_suffix("").parts
        here = "imcsim" if rel == ("__init__",) else rel[0]
        for target in _imports(path):
            there = _part(target)
            if there in ("__version__", "REPORT_SCHEMA_VERSION"):
                there = "imcsim"
            if there != here and RANK[there] > RANK[here]:
                upward.append(f"{path.relative_to(PACKAGE.parent)} imports {target}")
    assert not upward, upward
