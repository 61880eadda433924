"""Task data generated from data that ships with installed packages (nothing is downloaded).

Source: scikit-learn's bundled handwritten digits (1797 images, 8 x 8, 16 grey
levels; UCI ML hand-written digits, test set of Alpaydin & Kaynak 1998),
upsampled to ``image_size`` and scaled to [0, 1]. Tasks pick classes and apply
a domain shift: ``none``, ``rotate90``, ``invert`` or ``noise``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

TRANSFORMS = ("none", "rotate90", "invert", "noise")


@dataclass(frozen=True)
class TaskData:
    name: str
    classes: tuple[int, ...]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)


def make_task(
    name: str,
    classes: list[int],
    transform: str,
    image_size: int,
    test_fraction: float,
    rng: np.random.Generator,
) -> TaskData:
    """Build one task: select ``classes``, relabel 0..n-1, shift the domain, split train/test."""
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; valid: {', '.join(TRANSFORMS)}")
    images, labels = _digits()
    mask = np.isin(labels, classes)
    x = torch.from_numpy(images[mask]).unsqueeze(1)
    remap = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([remap[int(c)] for c in labels[mask]], dtype=torch.int64)
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    if transform == "rotate90":
        x = torch.rot90(x, 1, dims=(2, 3))
    elif transform == "invert":
        x = 1.0 - x
    elif transform == "noise":
        noise = torch.from_numpy(rng.normal(0.0, 0.3, size=x.shape).astype(np.float32))
        x = (x + noise).clamp(0.0, 1.0)
    order = rng.permutation(len(y))
    n_test = max(1, round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    return TaskData(name, tuple(classes), x[train], y[train], x[test], y[test])
