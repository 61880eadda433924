"""Export a torch model to ONNX for ``workload.model: {source: onnx, path: ...}``.

    python examples/export_onnx.py examples/my_model.onnx
    imcsim run examples/my_model_cost.yaml --set workload.model.source=onnx \
        --set workload.model.path=examples/my_model.onnx

Uses torch's TorchScript-based exporter (``dynamo=False``), which needs no package beyond torch and onnx.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from my_model import build


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="the .onnx file to write")
    p.add_argument("--image-size", type=int, default=32)
    args = p.parse_args(argv)
    model = build().eval()
    x = torch.randn(1, 3, args.image_size, args.image_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated, not removed
        torch.onnx.export(model, (x,), args.out, dynamo=False, input_names=["image"], output_names=["logits"])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
