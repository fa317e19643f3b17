"""The `dflearn` command: one module per sub-command, each with `register(subparsers)`.

A new sub-command: a module with `register(sub)` that adds its parser and sets
`func`, listed in COMMANDS below.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import DflearnError
from . import compare, cost, info, plot, reproduce, robust, sample, train

COMMANDS = [train, info, compare, reproduce, plot, cost, robust, sample]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dflearn",
        description="Train neural networks with direct feedback learning rules "
                    "(DFA, sparse DFA, DRTP, DKP, LAS, LTAS) beside backprop.",
        epilog="Run 'dflearn COMMAND --help' for a command's options. "
               "Quick start: 'dflearn train' trains LAS on the bundled digits in seconds.")
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"dflearn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from . import configfile

    parser = build_parser()
    args = None
    try:
        args = configfile.parse(parser, argv)  # --config FILE: the file's values, then the flags
        args.argv = list(sys.argv[1:] if argv is None else argv)  # for commands that relaunch themselves
        if getattr(args, "print_config", False):
            return configfile.print_config(args)
        code = args.func(args) or 0
        sys.stdout.flush()  # here, so that a closed pipe is caught below, not at interpreter exit
        return code
    except DflearnError as exc:
        print(f"dflearn: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `dflearn rules | head`: the reader left; no traceback
        _quiet_stdout()
        return 0
    except OSError as exc:  # the machine's answer (no space, no permission, a file where a folder belongs)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"dflearn: error: {exc.strerror or _one_line(exc)}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        import os
        if not ("DFLEARN_LAUNCHER_PID" in os.environ and "WORLD_SIZE" in os.environ):  # --nproc: the launcher says it
            print(f"dflearn: interrupted; {interrupted(args)}", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail again."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def interrupted(args) -> str:
    """What Ctrl-C leaves and how to continue, for the command that ran."""
    from ..training import rundir

    command = getattr(args, "command", None)
    if command == "train":
        from pathlib import Path
        named = getattr(args, "resume", None) or getattr(args, "out", None)
        out = Path(named) if named else rundir.STARTED[-1] if rundir.STARTED else None
        if out is not None and (out / "config.json").is_file():
            return f"finished epochs are saved in {out}; continue with: dflearn train --resume {out}"
        return "the run had not started, nothing was written"
    if command in ("compare", "reproduce"):
        where = f" under {args.out}" if getattr(args, "out", None) else ""
        return f"finished runs and epochs are saved{where}; run the same command again to continue"
    return "nothing was left half-written"
