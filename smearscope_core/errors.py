"""One base exception and the exit codes shared by every command line (train, convert, bench, the launcher).

Each stage subclasses ``SmearScopeError`` for its own failures, so an entry point catches one type and
turns it into one sentence on stderr and the error's ``exit_code``. Messages are written for the
person at the keyboard: what is wrong and, where it can be said, what to do.
"""

from __future__ import annotations

import sys
from enum import IntEnum


class ExitCode(IntEnum):
    """What a SmearScope command's exit status means; the same numbers for every command."""

    OK = 0
    GATE_FAILED = 1  # a quality gate said no (conversion drift, a self-test)
    BAD_INPUT = 2  # missing or broken input: a folder, card, manifest, dataset, image or flag
    FAILED = 3  # a tool we call (TFLite converter, runtime) failed on a valid input


class SmearScopeError(Exception):
    """Base of every error SmearScope raises on purpose; its message is one sentence for the user."""

    exit_code: ExitCode = ExitCode.FAILED


class InputError(SmearScopeError, ValueError):
    """Something the user gave us is missing or broken (a folder, file, flag): one sentence."""

    exit_code = ExitCode.BAD_INPUT


class DatasetError(InputError):
    """A dataset folder, class metadata file or split manifest that cannot be used: one sentence."""


def report(error: SmearScopeError) -> ExitCode:
    """What every command line does with an error it raised on purpose: one ``error:`` line on stderr, its code."""
    print(f"error: {error}", file=sys.stderr)
    return error.exit_code
