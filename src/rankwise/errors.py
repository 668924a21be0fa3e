"""Typed errors. Library code raises these; only `cli/__init__.py` (`main`) turns them into messages and exit codes."""

from __future__ import annotations

import re


class RankwiseError(Exception):
    """Bad input the user can fix. The CLI prints the message and exits with status 2."""


class ConfigError(RankwiseError, ValueError):
    """A config value is wrong: names the field, what is wrong, and how to fix it. Also a ValueError, as Python
    callers of the API (`rankwise.plan`, `rankwise.wrap`, ...) expect for a bad argument."""

    def __init__(self, field: str, problem: str, fix: str = ""):
        self.field, self.problem, self.fix = field, problem, fix
        flag = field if field.startswith(("-", "$")) or " " in field else f"--{field}"  # $: an environment variable
        message = f"{flag}: {problem}"
        if fix:
            message += f". {fix}"
        super().__init__(message)


    def renamed(self, flags: dict[str, str], texts: dict[str, str] | None = None) -> "ConfigError":
        """This error as a command with other flag names says it (`rankwise glue --epoch` for num_train_epochs):
        the field and every `--field` in the text renamed by `flags`, and each `texts` key replaced by its value."""
        def spell(text: str) -> str:
            for old, new in (texts or {}).items():
                text = text.replace(old, new)
            return re.sub(r"--(\w+)", lambda m: f"--{flags.get(m.group(1), m.group(1))}", text)

        field = flags.get(self.field.removeprefix("--"), self.field)
        return ConfigError(field, spell(self.problem), spell(self.fix))


class DataError(RankwiseError):
    """A data file is missing or malformed."""


class ModelError(RankwiseError):
    """A model cannot be found or loaded."""


class RunDirError(RankwiseError):
    """The output directory would lose a finished run, or a run directory is not usable."""


_ARGUMENT_ERRORS: dict[type, type] = {}


def argument_error(exc: RankwiseError, argument: str, arguments: tuple[str, ...] = ()) -> ConfigError:
    """`exc` as a Python API call reports it: a ConfigError naming the argument at fault (`argument`, or the one of
    `arguments` the message starts with, as `--out ...`), still an instance of its own class (a ModelError or
    RunDirError stays one)."""
    if isinstance(exc, ConfigError):
        return exc
    kind = type(exc)
    if kind not in _ARGUMENT_ERRORS:
        _ARGUMENT_ERRORS[kind] = type(f"{kind.__name__}Argument", (ConfigError, kind), {"__module__": __name__})
    text = str(exc)
    named = re.match(r"--(\w+):? (.*)", text, re.S)  # the CLI's flag: the call's argument of that name, if any
    if named:
        argument, text = (named.group(1) if named.group(1) in arguments else argument), named.group(2)
    return _ARGUMENT_ERRORS[kind](argument, text)
