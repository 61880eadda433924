"""Task data: bundled digits, or a user's local CIFAR-10 batches or image folders (nothing is downloaded).

Sources:

* ``digits``: scikit-learn's bundled handwritten digits (1797 images, 8 x 8,
  16 grey levels; UCI ML hand-written digits, test set of Alpaydin & Kaynak
  1998), one channel;
* ``cifar10``: the CIFAR-10 "python version" files a user already has: a
  folder holding ``data_batch_*`` / ``test_batch`` pickles (or one such file),
  each a dict with ``data`` (N x 3072 uint8, channel-major 32 x 32) and
  ``labels``; three channels, classes 0..9;
* ``image_folder``: ``PATH/<class name>/<image>`` (png, jpg, jpeg, bmp, gif,
  ppm, tif); classes are the sorted class-folder names, numbered from 0;
  images are converted to RGB, three channels.

Images are resized to ``image_size`` (bilinear) and scaled to [0, 1]. Tasks
pick classes (relabelled 0..n-1), apply a domain shift (``none``,
``rotate90``, ``invert``, ``noise``), optionally cap the images per class, and
split into train and test.
"""

from __future__ import annotations

import functools
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

TRANSFORMS = ("none", "rotate90", "invert", "noise")
SOURCES = ("digits", "cifar10", "image_folder")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".tif", ".tiff")


class DataError(ValueError):
    """A data source that cannot be read as asked (the message says why and what would be valid).

    ``key``: the workload-card key it concerns, when known (e.g. ``tasks.1.path``).
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


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

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[1])


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32)[:, None] / 16.0, d.target.astype(np.int64)


@functools.lru_cache(maxsize=4)
def load_cifar10(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) float32 in [0, 1] and labels from CIFAR-10 python batches at ``path``."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("data_batch_*")) + sorted(p.glob("test_batch"))
        if not files:
            raise DataError(f"{path}: no data_batch_* or test_batch files (expected the CIFAR-10 python version)")
    elif p.is_file():
        files = [p]
    else:
        raise DataError(f"{path}: no such file or folder")
    images, labels = [], []
    for f in files:
        try:
            with open(f, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            data = np.asarray(batch[b"data"] if b"data" in batch else batch["data"], dtype=np.uint8)
            lab = batch.get(b"labels", batch.get("labels"))
        except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, AttributeError, ValueError) as err:
            raise DataError(f"{f}: not a CIFAR-10 python batch ({type(err).__name__})") from None
        if lab is None or data.ndim != 2 or data.shape[1] != 3072 or len(lab) != len(data):
            raise DataError(f"{f}: expected 'data' N x 3072 uint8 and N 'labels'")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(lab, dtype=np.int64))
    return np.concatenate(images).astype(np.float32) / 255.0, np.concatenate(labels)


@functools.lru_cache(maxsize=4)
def load_image_folder(path: str, image_size: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Images (N, 3, S, S) float32 in [0, 1], labels and class names from ``path/<class>/<image>``."""
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{path}: no such folder (expected PATH/<class name>/<image files>)")
    classes = tuple(sorted(d.name for d in root.iterdir() if d.is_dir()))
    if not classes:
        raise DataError(f"{path}: no class folders (expected PATH/<class name>/<image files>)")
    images, labels = [], []
    for label, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    rgb = im.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
            except (OSError, UnidentifiedImageError):
                raise DataError(f"{f}: not a readable image") from None
            images.append(np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0)
            labels.append(label)
    if not images:
        raise DataError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes


def source_images(source: str, path: str | None, image_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(images N x C x H x W, labels, number of classes) of a data source."""
    if source == "digits":
        x, y = _digits()
        return x, y, 10
    if path is None:
        raise DataError(f"source {source} needs a path")
    if source == "cifar10":
        x, y = load_cifar10(str(Path(path).resolve()))
        return x, y, 10
    if source == "image_folder":
        x, y, names = load_image_folder(str(Path(path).resolve()), image_size)
        return x, y, len(names)
    raise DataError(f"unknown source {source!r}; valid: {', '.join(SOURCES)}")


def make_task(
    name: str,
    classes: list[int],
    transform: str,
    image_size: int,
    test_fraction: float,
    rng: np.random.Generator,
    source: str = "digits",
    path: str | None = None,
    max_per_class: int | None = None,
) -> TaskData:
    """Build one task: select ``classes``, relabel 0..n-1, shift the domain, split train/test."""
    if transform not in TRANSFORMS:
        raise DataError(f"unknown transform {transform!r}; valid: {', '.join(TRANSFORMS)}")
    images, labels, n_classes = source_images(source, path, image_size)
    bad = [c for c in classes if not 0 <= c < n_classes]
    if bad:
        raise DataError(f"classes {bad} do not exist in {source} {path or ''}".rstrip()
                        + f" (valid: 0..{n_classes - 1})")
    keep = np.flatnonzero(np.isin(labels, classes))
    if max_per_class is not None:
        keep = np.concatenate([keep[labels[keep] == c][:max_per_class] for c in classes])
    if len(keep) < 2:
        raise DataError(f"task {name}: {len(keep)} image(s) of classes {classes}; need at least 2")
    x = torch.from_numpy(images[keep])
    remap = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([remap[int(c)] for c in labels[keep]], dtype=torch.int64)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    if transform == "rotate90":
        x = torch.rot90(x, 1, dims=(2, 3))
    elif transform == "invert":
        x = 1.0 - x
    elif transform == "noise":
        noise = torch.from_numpy(rng.normal(0.0, 0.3, size=x.shape).astype(np.float32))
        x = (x + noise).clamp(0.0, 1.0)
    order = rng.permutation(len(y))
    n_test = min(len(y) - 1, max(1, round(test_fraction * len(y))))
    test, train = order[:n_test], order[n_test:]
    return TaskData(name, tuple(classes), x[train], y[train], x[test], y[test])
