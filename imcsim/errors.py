"""Error types that the CLI turns into one-line messages and exit codes."""

from __future__ import annotations


class InputError(Exception):
    """Bad user input: a config, card, override or data file. Exit code 2.

    ``str(err)`` is the one line shown to the user: ``file: key: message``.
    """

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        message = " ".join(str(message).split("\n"))  # always one line
        self.file = file
        self.key = key
        self.message = message
        parts = [p for p in (file, key) if p]
        super().__init__(": ".join([*parts, message]))


class PhysicsError(InputError):
    """Parameters that validate one by one but describe an unphysical device."""


class UnknownKeyError(InputError):
    """A config or card names a key its section does not have."""
