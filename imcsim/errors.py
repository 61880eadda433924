"""Error types that the CLI turns into one-line messages and exit codes."""

from __future__ import annotations

from typing import Any

ECHO_CHARS = 60
"""Longest echo of a user's value in an error line (longer ones are cut in the middle)."""
MESSAGE_CHARS = 600
"""Longest message of an error line: a line stays readable whatever the input held."""


def shorten(value: Any, limit: int = ECHO_CHARS) -> str:
    """``repr(value)`` cut in the middle to at most ``limit`` characters, for echoing a user's value."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print
        return f"<integer of {value.bit_length()} bits>"
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return f"{text[:half]} ... {text[-half:]}"


class InputError(Exception):
    """Bad user input: a config, card, override or data file. Exit code 2.

    ``str(err)`` is the one line shown to the user: ``file: key: message``.
    """

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        message = " ".join(str(message).split())  # always one line
        if len(message) > MESSAGE_CHARS:
            message = f"{message[: MESSAGE_CHARS - 4]} ..."
        self.file = file
        self.key = key
        self.message = message
        parts = [p for p in (file, key) if p]
        super().__init__(": ".join([*parts, message]))


class FieldError(ValueError):
    """Raised inside a model validator to blame one key below the model being validated.

    ``key`` is dotted relative to that model (``side_blocks``, ``activity.from_report``); the config loader
    appends it to the model's own location, so the error names the precise key and the file that set it.
    """

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class PhysicsError(InputError):
    """Parameters that validate one by one but describe an unphysical device."""


class UnknownKeyError(InputError):
    """A config or card names a key its section does not have."""


class DataError(ValueError):
    """A data source that cannot be read as asked (the message says why and what would be valid).

    ``key``: the workload-card key it concerns, when known (e.g. ``tasks.1.path``).
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
