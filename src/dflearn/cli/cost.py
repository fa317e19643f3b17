"""`dflearn cost`: MACs, feedback memory and data movement of one training step, per rule beside BP."""
from __future__ import annotations

import argparse
import sys
import json
from pathlib import Path

from ..errors import DflearnError
from .train import parse_options

# the input shapes and class counts of the standard sets, so that costing reads no data files;
# any other registered data set is loaded for its shape
SHAPES = {"digits": ((1, 8, 8), 10), "mnist": ((1, 28, 28), 10), "fashion-mnist": ((1, 28, 28), 10),
          "cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100), "tinyimagenet": ((3, 64, 64), 200)}


def input_spec(args) -> tuple[tuple[int, ...], int]:
    """(C, H, W) and the number of classes, from --input-shape/--num-classes or the data set."""
    shape, classes = SHAPES.get(args.dataset, (None, None))
    if shape is None and not (args.input_shape and args.num_classes):
        from ..data import DATASETS, load_dataset

        if args.dataset not in DATASETS:
            raise DflearnError(f"unknown data set '{args.dataset}'; choose one of: "
                               f"{', '.join(sorted(set(SHAPES) | set(DATASETS)))}, or give --input-shape and --num-classes")
        data = load_dataset(args.dataset)
        shape, classes = data.input_shape, data.num_classes
    if args.input_shape:
        try:
            shape = tuple(int(s) for s in args.input_shape.replace("x", ",").split(",") if s)
        except ValueError:
            raise DflearnError(f"--input-shape '{args.input_shape}' is not C,H,W (e.g. 3,32,32)") from None
    if args.num_classes is not None:
        classes = args.num_classes
    if not shape or min(shape) < 1 or classes < 1:
        raise DflearnError("input shape and number of classes must be positive (e.g. --input-shape 3,32,32 --num-classes 10)")
    return shape, classes


def run(args: argparse.Namespace) -> int:
    import torch

    from ..cost import compare, format_blocks, format_summary
    from ..models import build_model
    from ..rules import RULES

    if args.batch_size < 1:
        raise DflearnError(f"--batch-size must be at least 1, got {args.batch_size}")
    shape, classes = input_spec(args)
    torch.manual_seed(0)  # sparse DFA's index draw; the counts do not depend on it
    model = build_model(args.model, shape, classes, **parse_options(args.model_opt, "model"))
    rules = [r for r in (args.rules or "").split(",") if r.strip()]
    if args.rule:  # the old spelling, repeated --rule X
        print("dflearn: note: 'cost --rule X' is deprecated; give rules as a list, --rules a,b (as in compare)",
              file=sys.stderr)
        rules += args.rule
    rules = rules or [r for r in sorted(RULES) if r != "bp"]
    from ..plugins import find_rule
    for r in rules:  # module:Class or an installed plugin, as in train and compare
        find_rule(r)
    # a language model reads ids: one window of its context (the input shape is the data's default)
    example = (torch.zeros(1, model.context, dtype=torch.long) if hasattr(model, "context")
               else torch.zeros(1, *shape))
    costs = compare(model, rules, example, args.batch_size, **parse_options(args.rule_opt, "rule"))
    print(f"{args.model} on {args.dataset} input {'x'.join(map(str, shape))}, {classes} outputs; "
          f"one training step of batch {args.batch_size}\n")
    if not args.brief:
        for cost in costs.values():
            print(format_blocks(cost) + "\n")
    print(format_summary(costs))
    for note in sorted({n for c in costs.values() for n in c.notes}):
        print(f"note: {note}")
    if args.json:
        out = {"model": args.model, "dataset": args.dataset, "input_shape": list(shape), "num_classes": classes,
               "batch_size": args.batch_size, "value_bytes": 4, "index_bytes": 4,
               "rules": {name: cost.to_dict(costs["bp"]) for name, cost in costs.items()}}
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"\nwrote {args.json}")
    return 0


def register(sub) -> None:
    text = "MACs, feedback memory and data movement of one training step per rule, beside BP"
    p = sub.add_parser("cost", help=text, description=text + " (conventions: docs/cost.md).")
    p.add_argument("--model", default="mlp", help="model name, module:function or a plugin (default mlp; see 'dflearn models')")
    p.add_argument("-m", "--model-opt", action="append", metavar="KEY=VALUE", help="model option, repeatable")
    p.add_argument("--dataset", default="digits", help="data set giving the input shape and classes (default digits)")
    p.add_argument("--input-shape", metavar="C,H,W", help="input shape, instead of the data set's")
    p.add_argument("--num-classes", type=int, help="number of outputs d_L, instead of the data set's")
    p.add_argument("--rules", help="comma-separated rules to cost, names, module:Class or plugins (default: every built-in rule); BP is always shown")
    p.add_argument("--rule", action="append", help=argparse.SUPPRESS)  # deprecated: repeated --rule X
    p.add_argument("-o", "--rule-opt", action="append", metavar="KEY=VALUE",
                   help="rule option, repeatable, given to the rules that take it (e.g. -o k=1)")
    p.add_argument("--batch-size", type=int, default=64, help="minibatch size N (default 64)")
    p.add_argument("--json", metavar="FILE", help="also write every count to FILE as JSON")
    p.add_argument("--brief", action="store_true", help="print only the summary, not the per-block tables")
    p.set_defaults(func=run)
