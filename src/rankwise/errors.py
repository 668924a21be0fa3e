"""Typed errors. Library code raises these; only `cli/__init__.py` (`main`) turns them into messages and exit codes."""

from __future__ import annotations


class RankwiseError(Exception):
    """Bad input the user can fix. The CLI prints the message and exits with status 2."""


class ConfigError(RankwiseError, ValueError):
    """A config value is wrong: names the field, what is wrong, and how to fix it. Also a ValueError, as Python
    callers of the API (`rankwise.plan`, `rankwise.wrap`, ...) expect for a bad argument."""

    def __init__(self, field: str, problem: str, fix: str = ""):
        self.field, self.problem, self.fix = field, problem, fix
        flag = field if field.startswith("-") or " " in field else f"--{field}"
        message = f"{flag}: {problem}"
        if fix:
            message += f". {fix}"
        super().__init__(message)


class DataError(RankwiseError):
    """A data file is missing or malformed."""


class ModelError(RankwiseError):
    """A model cannot be found or loaded."""


class RunDirError(RankwiseError):
    """The output directory would lose a finished run, or a run directory is not usable."""
