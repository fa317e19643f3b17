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
    try:
        args = configfile.parse(parser, argv)  # --config FILE: the file's values, then the flags
        args.argv = list(sys.argv[1:] if argv is None else argv)  # for commands that relaunch themselves
        if getattr(args, "print_config", False):
            return configfile.print_config(args)
        return args.func(args) or 0
    except DflearnError as exc:
        print(f"dflearn: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `dflearn rules | head`: the reader left; no traceback
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("dflearn: interrupted; finished epochs are saved, continue with --resume DIR", file=sys.stderr)
        return 130
