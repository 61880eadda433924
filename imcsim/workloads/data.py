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

Data files are data, never code:

* a CIFAR-10 batch is read by a restricted unpickler that builds only builtin
  containers, strings, bytes, numbers and numpy arrays, scalars and dtypes; a
  pickle naming any other global (``os.system``, ``builtins.exec``, ...) is
  refused before anything in it runs;
* a batch must then be a dict whose ``data`` is a uint8 N x 3072 numpy array
  (other dtypes are refused, not cast) and whose ``labels`` are N integers in
  0..9;
* an image is refused when its header declares more than ``MAX_IMAGE_PIXELS``
  pixels (checked before decoding; Pillow's own decompression-bomb limits are
  errors too), or when it cannot be decoded (not an image, truncated, corrupt);
* every refusal and every failure to read is a ``DataError`` naming the file
  (out of memory excepted); values echoed in a message are cut to a short repr.
"""

from __future__ import annotations

import functools
import io
import math
import pickle
import pickletools
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
import torch.nn.functional as F

from imcsim.errors import DataError

TRANSFORMS = ("none", "rotate90", "invert", "noise")
SOURCES = ("digits", "cifar10", "image_folder")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".tif", ".tiff")
MAX_BATCH_BYTES = 2**30  # a CIFAR-10 python batch is about 31 MB
MAX_IMAGE_PIXELS = 2**26  # width x height an image header may declare (a 8192 x 8192 image)
CIFAR_CLASSES = 10
CIFAR_ROW = 3 * 32 * 32


def _short(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to at most ``limit`` characters: a value from a data file, safe to echo in a message."""
    try:
        text = repr(value)
    except Exception:  # e.g. an int too long to print
        text = f"<int of {value.bit_length()} bits>" if isinstance(value, int) else f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clip(text: str, limit: int = 120) -> str:
    """An error text on one line, cut to at most ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refuse(what: str) -> NoReturn:
    raise pickle.UnpicklingError(f"refused {what}")


def _codecs_encode(obj: str, encoding: str) -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of bytes call it: a str to its latin-1 bytes."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "ascii", "utf-8", "utf8"):
        _refuse(f"_codecs.encode of type {type(obj).__name__} with codec {_short(encoding)}")
    return obj.encode(encoding)


def _bytes_from(kind: type) -> object:
    """``bytes``/``bytearray`` as pickles call them (from a str or bytes, or empty), never ``kind(size)``."""

    def make(*args: object) -> object:
        if args and not isinstance(args[0], (str, bytes, bytearray)):
            _refuse(f"{kind.__name__}() of type {type(args[0]).__name__}")
        return kind(*args)

    return make


class _PickledArray(np.ndarray):
    """What ``numpy.ndarray`` names in a batch pickle: an array whose pickled state must match its shape.

    Its state is checked before numpy allocates anything, so a few bytes cannot ask for gigabytes; it cannot be
    called to make an array. Callers view the result as a plain ``np.ndarray``.
    """

    def __new__(cls, *args: object, **kwargs: object) -> NoReturn:
        _refuse("numpy.ndarray() called directly")

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            _refuse("an array state of an unknown form")
        shape, dtype, raw = state[-4], state[-3], state[-1]
        if (not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape)
                or not isinstance(dtype, np.dtype)):
            _refuse(f"an array of shape {_short(shape)} and dtype {_short(dtype)}")
        count = math.prod(shape)
        if dtype.hasobject:
            fits = isinstance(raw, list) and len(raw) == count
        else:
            fits = isinstance(raw, (bytes, bytearray)) and len(raw) == count * dtype.itemsize
        if not fits:
            _refuse(f"an array of shape {_short(shape)} and dtype {_clip(str(dtype), 40)} whose data does not fit it")
        super().__setstate__(state)


def _array_reconstructor(reconstruct: object) -> object:
    """numpy's ``_reconstruct`` as pickles of arrays call it: an empty array that ``__setstate__`` then fills."""

    def make(subtype: object, shape: object, dtype: object) -> np.ndarray:
        if subtype is not _PickledArray or shape != (0,):
            _refuse(f"numpy _reconstruct of {_short(subtype)} with shape {_short(shape)}")
        return reconstruct(subtype, shape, dtype)

    return make


def _scalar_maker(scalar: object) -> object:
    """numpy's ``scalar`` as pickles of numpy scalars call it: a dtype and exactly its bytes (or one object)."""

    def make(dtype: object, *obj: object) -> object:
        if not isinstance(dtype, np.dtype) or len(obj) != 1 or not (
                dtype.hasobject or (isinstance(obj[0], bytes) and len(obj[0]) == dtype.itemsize)):
            _refuse(f"a numpy scalar of dtype {_short(dtype)} from {_short(obj)}")
        return scalar(dtype, *obj)

    return make


@functools.lru_cache(maxsize=1)
def _pickle_globals() -> dict[tuple[str, str], object]:
    """The globals a CIFAR-10 batch pickle may name, (module, name) -> what it builds; nothing else is loaded."""
    if int(np.__version__.split(".")[0]) >= 2:
        from numpy._core import multiarray, numeric
    else:
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], object] = {("_codecs", "encode"): _codecs_encode}
    for builtins_module in ("builtins", "__builtin__"):  # Python 3 names, and Python 2 names (protocols 0-2)
        for kind in (dict, list, tuple, set, frozenset, str, int, float, complex):
            allowed[builtins_module, kind.__name__] = kind
        for kind in (bytes, bytearray):
            allowed[builtins_module, kind.__name__] = _bytes_from(kind)
    for core in ("numpy.core", "numpy._core"):  # numpy 1 and numpy 2 write different module names
        allowed[f"{core}.multiarray", "_reconstruct"] = _array_reconstructor(multiarray._reconstruct)
        allowed[f"{core}.multiarray", "scalar"] = _scalar_maker(multiarray.scalar)
        allowed[f"{core}.numeric", "_frombuffer"] = numeric._frombuffer  # protocol 5 arrays
    allowed["numpy", "ndarray"] = _PickledArray
    allowed["numpy", "dtype"] = np.dtype
    return allowed


class _BatchUnpickler(pickle.Unpickler):
    """Reads a CIFAR-10 batch pickle, building only the globals of ``_pickle_globals`` (Python 2 str as bytes)."""

    def __init__(self, fh, path: Path) -> None:
        super().__init__(fh, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> object:
        found = _pickle_globals().get((module, name))
        if found is None:
            raise DataError(f"{self.path}: refused: the pickle names the global {_short(f'{module}.{name}', 80)}, "
                            "which a CIFAR-10 batch never holds (only containers, strings, bytes, numbers and "
                            "numpy arrays are read; nothing in the file was run)")
        return found


def _cifar_labels(lab: object, f: Path) -> np.ndarray:
    """The labels of a batch as int64, each checked to be an integer class 0..9."""
    valid = f"expected N integers 0..{CIFAR_CLASSES - 1}"
    if isinstance(lab, np.ndarray):
        lab = lab.view(np.ndarray)
        if lab.ndim != 1 or lab.dtype.kind not in "iu":
            raise DataError(f"{f}: 'labels' is a {_clip(str(lab.dtype), 40)} array of shape {_short(lab.shape)}; {valid}")
        bad = np.flatnonzero((lab < 0) | (lab >= CIFAR_CLASSES))
        if bad.size:
            at = int(bad[0])
            raise DataError(f"{f}: label {_short(lab[at].item())} at position {at} is not a CIFAR-10 class; {valid}")
        return lab.astype(np.int64)
    if not isinstance(lab, (list, tuple)):
        raise DataError(f"{f}: 'labels' is a {type(lab).__name__}; {valid}")
    for at, v in enumerate(lab):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise DataError(f"{f}: label {_short(v)} at position {at} is not an integer; {valid}")
        if not 0 <= v < CIFAR_CLASSES:
            raise DataError(f"{f}: label {_short(v)} at position {at} is not a CIFAR-10 class; {valid}")
    return np.asarray(lab, dtype=np.int64)


def _cifar_batch(batch: object, f: Path) -> tuple[np.ndarray, np.ndarray]:
    """(``data`` N x 3072 uint8, ``labels`` N int64) of one unpickled batch, its structure checked strictly."""
    if not isinstance(batch, dict):
        raise DataError(f"{f}: not a CIFAR-10 python batch (a {type(batch).__name__}, expected a dict)")
    data = batch.get(b"data", batch.get("data"))
    lab = batch.get(b"labels", batch.get("labels"))
    if data is None or lab is None:
        raise DataError(f"{f}: not a CIFAR-10 python batch (no 'data' or no 'labels' entry)")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_ROW:
        what = (f"a {_clip(str(data.dtype), 40)} array of shape {_short(data.shape)}" if isinstance(data, np.ndarray)
                else f"a {type(data).__name__}")
        raise DataError(f"{f}: 'data' is {what}; expected a uint8 numpy array N x {CIFAR_ROW}")
    data = data.view(np.ndarray)
    labels = _cifar_labels(lab, f)
    if len(labels) != len(data):
        raise DataError(f"{f}: {len(data)} images in 'data' but {len(labels)} 'labels'")
    return data, labels


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
    """Images (N, 3, 32, 32) float32 in [0, 1] and labels from CIFAR-10 python batches at ``path``.

    Batches are read as data only (see the module docstring); a file that is not one raises ``DataError``.
    """
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
            if f.stat().st_size > MAX_BATCH_BYTES:
                raise DataError(f"{f}: {f.stat().st_size:,} bytes, more than a CIFAR-10 batch can hold "
                                f"(at most {MAX_BATCH_BYTES:,})")
            blob = f.read_bytes()
            # The opcodes first, read without building anything: a length field claiming more than the file
            # holds is refused here, never handed to the unpickler, which would allocate that length.
            with warnings.catch_warnings():  # a malformed string opcode warns inside pickletools: it is refused anyway
                warnings.simplefilter("ignore", DeprecationWarning)
                for _ in pickletools.genops(io.BytesIO(blob)):
                    pass
            batch = _BatchUnpickler(io.BytesIO(blob), f).load()
            data, lab = _cifar_batch(batch, f)
        except (DataError, MemoryError):
            raise
        except Exception as err:  # a file that is not a batch fails in many ways, all of them bad data
            raise DataError(f"{f}: not a CIFAR-10 python batch ({type(err).__name__}: {_clip(str(err))})") from None
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    return np.concatenate(images).astype(np.float32) / 255.0, np.concatenate(labels)


def _read_image(f: Path, image_size: int):
    """The image ``f`` as RGB resized to ``image_size``; ``DataError`` for a bomb or anything that does not decode."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(f) as im:
                width, height = im.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise DataError(f"{f}: refused: the image declares {width} x {height} pixels, more than "
                                    f"{MAX_IMAGE_PIXELS} (a decompression bomb, or far larger than any task needs)")
                return im.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
        except DataError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise DataError(f"{f}: refused: too many pixels ({_clip(str(err))})") from None
        except (OSError, SyntaxError, ValueError, struct.error, EOFError, IndexError, KeyError, TypeError,
                ZeroDivisionError) as err:  # not an image, truncated or corrupt
            raise DataError(f"{f}: not a readable image ({type(err).__name__}: {_clip(str(err))})") from None


@functools.lru_cache(maxsize=4)
def load_image_folder(path: str, image_size: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Images (N, 3, S, S) float32 in [0, 1], labels and class names from ``path/<class>/<image>``."""
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
            rgb = _read_image(f, image_size)
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
