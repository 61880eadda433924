"""Output files and folders: written atomically, and never in place of anything imcsim did not write.

Rules every output path follows (``--out``, ``--trace``, sweep and compare folders, plots):

* An output folder carries a marker file, :data:`MARKER`, written by imcsim as the
  last file of a complete folder. An existing folder is replaced only when it
  carries the marker (or is empty); an existing file is never replaced by a
  folder. An output file is replaced only when its first bytes carry imcsim's
  signature (a trace's ``generator`` field, a PNG's ``Software`` text).
* Every output path is checked before a run starts: refused paths and folders
  that cannot be written are input errors naming the option.
* A folder is filled as a hidden sibling ``.NAME.tmp-XXXX`` and put in place by
  one atomic exchange of the two names (Linux ``renameat2(RENAME_EXCHANGE)``):
  a kill at any instant leaves the old complete folder or the new one under
  ``NAME``. Where the exchange is not available, the old folder is moved aside
  to ``.NAME.old-XXXX`` first; the next write to ``NAME`` then recovers a
  folder a kill left under a hidden name (the complete new one if it exists,
  else the old one) and removes the other leftovers.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from imcsim.errors import InputError

MARKER = ".imcsim-output"
"""File in every folder imcsim writes; its presence marks a folder imcsim may replace."""
SIGNATURE = b"imcsim"
"""Bytes near the start of every output file imcsim writes (trace generator, PNG Software text)."""
_SIGNATURE_WINDOW = 4096
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, flushed to disk and renamed into
    place: readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --- checks before a run -------------------------------------------------------


def is_imcsim_folder(path: Path) -> bool:
    """A folder imcsim wrote (it carries the marker)."""
    return (path / MARKER).is_file()


def is_imcsim_file(path: Path) -> bool:
    """An output file imcsim wrote: its first bytes carry the signature."""
    try:
        with open(path, "rb") as f:
            return SIGNATURE in f.read(_SIGNATURE_WINDOW)
    except OSError:
        return False


def check_writable(folder: Path, option: str) -> None:
    """Check that files can be created in ``folder``, or, where it does not exist yet, in its nearest existing
    ancestor (by creating and removing a probe file: permissions, read-only file systems and full quotas all
    show)."""
    parent = folder
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{folder}: cannot create it, {parent} is a file", key=option)
    try:
        fd, probe = tempfile.mkstemp(prefix=".imcsim-probe-", dir=parent)
    except OSError as err:
        raise InputError(f"{folder}: cannot write into {parent} ({err.strerror or err})", key=option) from None
    os.close(fd)
    Path(probe).unlink(missing_ok=True)


def check_output_folder(path: str | os.PathLike, option: str) -> Path:
    """Refuse, before any work, an output folder that would replace something imcsim did not write.

    Accepted: a path that does not exist, an empty folder, or a folder carrying :data:`MARKER`. Refused (an
    :class:`InputError` naming ``option``): an existing file, a folder with files but no marker, a location
    that cannot be written.
    """
    path = Path(path)
    try:
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                raise InputError(f"{path} is an existing file; give a folder name (imcsim never replaces a file "
                                 "with its output folder)", key=option)
            if not is_imcsim_folder(path) and any(path.iterdir()):
                raise InputError(f"{path} is a folder imcsim did not write (it has no {MARKER} marker); give a new "
                                 "or empty folder (imcsim replaces only its own output folders)", key=option)
        check_writable(path.parent, option)
    except OSError as err:
        raise InputError(f"{path}: cannot use it as an output folder ({err.strerror or err})", key=option) from None
    return path


def check_output_file(path: str | os.PathLike, option: str, example: str) -> Path:
    """Refuse, before any work, an output file that would replace something imcsim did not write.

    Accepted: a path that does not exist, or a file imcsim wrote (:func:`is_imcsim_file`). Refused: a folder,
    any other existing file, a location that cannot be written. ``example`` is a valid file name to suggest.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise InputError(f"{path} is a folder; give a file name such as {example}", key=option)
        if (path.exists() or path.is_symlink()) and not is_imcsim_file(path):
            raise InputError(f"{path} is an existing file imcsim did not write; give a new file name (imcsim "
                             "replaces only its own output files)", key=option)
        check_writable(path.parent, option)
    except OSError as err:
        raise InputError(f"{path}: cannot use it as an output file ({err.strerror or err})", key=option) from None
    return path


# --- folders written atomically ----------------------------------------------


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` in one atomic step; False where the system cannot."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError, TypeError):  # not Linux, or a C library without renameat2
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _leftovers(out: Path, kind: str) -> list[Path]:
    """Hidden siblings of ``out`` a killed write left behind, newest first (``kind``: ``tmp`` or ``old``)."""
    found = [p for p in out.parent.glob(f".{out.name}.{kind}-*") if p.is_dir() and not p.is_symlink()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def recover_folder(out: Path) -> None:
    """Put back a folder a killed write left under a hidden name, and remove that write's other leftovers.

    When ``out`` is missing, the newest complete new folder (``.NAME.tmp-*`` carrying the marker) takes its
    name, else the newest old one (``.NAME.old-*``). Leftovers that are not complete imcsim folders are
    partial writes and are removed.
    """
    if not out.parent.is_dir():
        return
    if not out.exists():
        done = [p for p in _leftovers(out, "tmp") if is_imcsim_folder(p)]
        for candidate in (*done, *(p for p in _leftovers(out, "old") if is_imcsim_folder(p))):
            with contextlib.suppress(OSError):
                os.rename(candidate, out)
                break
    for stale in (*_leftovers(out, "tmp"), *_leftovers(out, "old")):
        shutil.rmtree(stale, ignore_errors=True)


def write_folder(out: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Fill a new folder and put it in place of ``out`` atomically (see the module docstring); returns ``out``.

    ``fill(tmp)`` writes the files into the empty folder ``tmp``; the marker is written after it returns. An
    existing ``out`` must be empty or carry the marker (checked again here, at the last moment).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(out)
    check_output_folder(out, "--out")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        fill(tmp)
        _write_synced(tmp / MARKER, b"imcsim output folder: replaced as a whole by the next run writing here\n")
        _fsync_dir(tmp)
        if not out.exists():
            os.rename(tmp, out)
        elif _exchange(tmp, out):
            shutil.rmtree(tmp, ignore_errors=True)  # now the previous folder
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            old.rmdir()
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def mark_folder(folder: Path) -> None:
    """Mark a folder imcsim fills in place (a sweep's) as its own."""
    if not is_imcsim_folder(folder):
        _write_synced(folder / MARKER, b"imcsim output folder\n")


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
