"""Write docs/validation.md: every reference design of configs/silicon/ run, its published figures beside the
simulated ones, and what each design does not model.

    python docs/validation.py          # rewrites docs/validation.md
    python docs/validation.py --check  # exit 1 when docs/validation.md is not what the designs give now
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "validation.md"

NOT_YET = [
    ("ISAAC (Shafiee et al., ISCA 2016)", "16-bit weights in 2-bit cells and 16-bit inputs: the circuits here "
     "compute INT8 only; the crossbar card takes ISAAC's converters and their sharing (one ADC per crossbar)"),
    ("NeuRRAM (Wan et al., Nature 2022)", "4-bit weights, 1-8-bit inputs and 3-10-bit outputs: INT8 only here"),
    ("A digital STT-MRAM CIM macro (Cai et al., ISSCC 2023, 28 nm, 22.4-41.5 TOPS/W)",
     "the precision and organisation behind the figure are not in the published abstract"),
    ("An on-chip training accelerator (Qian et al., JSSC 2024, 28 nm, 4.69 TOPS/W training)",
     "the training precision and operating point behind the figure are not in the published abstract"),
]


def designs() -> list[Path]:
    return sorted((ROOT / "configs" / "silicon").glob("*.yaml"))


def render() -> str:
    from imcsim.api import check_targets, run
    from imcsim.config import load_config
    from imcsim.metrics import REGISTRY

    lines = [
        "# Validation against published silicon",
        "",
        "Written by `python docs/validation.py` from the reference designs in `configs/silicon/` (each a",
        "published macro at its node, precision and supply, with the published figures as `targets`);",
        "`imcsim validate configs/silicon/NAME.yaml --targets` prints one design's rows.",
        "`tests/test_silicon.py` holds each figure to its tolerance; a design outside it is marked there as a",
        "known gap with the reason, and fails the suite once it lands (so the mark is removed).",
        "",
        "| design | metric | published | simulated | ratio | tolerance | within | measured at |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for path in designs():
        loaded = load_config(path)
        for r in check_targets(loaded, run(loaded)):
            unit = REGISTRY[r.metric].unit
            sim = "-" if r.simulated is None else f"{r.simulated:.3g} {unit}"
            ratio = "-" if r.ratio is None else f"{r.ratio:.3g}"
            lines.append(f"| `{path.stem}` | `{r.metric}` | {r.published:.4g} {unit} | {sim} | {ratio} | "
                         f"{r.tolerance:g}x | {'yes' if r.within else 'no'} | {r.conditions} |")
        cfg = loaded.config
        notes.append(f"- `{path.stem}`: {cfg.description}. Sources: "
                     + "; ".join(f"{k}: {v}" for k, v in cfg.references.items())
                     + ". Not modelled: " + "; ".join(cfg.not_modelled) + ".")
    lines += ["", "## The designs", "", *notes, "", "## Designs not configured yet", ""]
    lines += [f"- {name}: {why}." for name, why in NOT_YET]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        same = OUT.exists() and OUT.read_text() == text
        print("docs/validation.md is up to date" if same else "docs/validation.md differs: run docs/validation.py")
        return 0 if same else 1
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
