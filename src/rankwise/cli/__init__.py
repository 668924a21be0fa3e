"""The `rankwise` command. Each module of this package registers a group of subcommands; library code
raises typed errors and this is the one place that turns them into a message and an exit status
(2 for bad input)."""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys

from ..errors import RankwiseError

EXIT_BAD_INPUT = 2

# Modules of this package, in the order their commands appear in `rankwise --help`. Each has
# `register(subparsers)`, which adds its subcommands with `set_defaults(func=handler)`.
COMMAND_MODULES = ("train", "sweep", "report", "lr_sweep", "placement", "export")


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got `{text}`")
    return value


def build_parser() -> argparse.ArgumentParser:
    from ..version import __version__

    parser = argparse.ArgumentParser(prog="rankwise", description="Fine-tune transformers with per-matrix "
                                     "adapter ranks: static strategies or learned under a parameter budget.")
    parser.add_argument("--version", action="version", version=f"rankwise {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    parser.set_defaults(_commands=sub.choices)
    return parser


def _refuse_unknown(args: argparse.Namespace, extras: list[str], parser: argparse.ArgumentParser) -> None:
    """argparse's error for arguments no option takes, from the subcommand's parser (its usage, not the top-level
    one) and naming the closest flag it has."""
    command = args._commands.get(args.command) if args.command else None
    target = command or parser
    flags = [flag for action in target._actions for flag in action.option_strings if flag.startswith("--")]
    unknown = next((e.split("=")[0] for e in extras if e.startswith("-")), None)
    close = difflib.get_close_matches(unknown, flags, n=1, cutoff=0.6) if unknown else []
    hint = f" (did you mean {close[0]}?)" if close else (f"; `rankwise {args.command} --help` lists its flags"
                                                          if command else "")
    target.error(f"unrecognized arguments: {' '.join(extras)}{hint}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        _refuse_unknown(args, extras, parser)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return args.func(args)
    except RankwiseError as exc:
        print(f"rankwise {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
