"""`dflearn train`: one run, from flags to a run directory."""
from __future__ import annotations

import argparse
import ast

from ..errors import DflearnError
from . import configfile

S = argparse.SUPPRESS  # only flags the user gives reach the config (so --resume can check them)
# no argparse choices: Config refuses another value in one line (exit 1), from a flag or a file alike
ALIGN_MEASURE = dict(metavar="{sample,batch}",
                     help="how alignment pools a batch: sample (default: each sample's cosine over its positions "
                          "and features, logged as their mean, alignment, and std, alignment_std) or batch (one "
                          "cosine over the whole batch)")


def parse_options(pairs: list[str] | None, what: str) -> dict:
    """['k=1', 'init=product', 'widths=[256,256]'] -> {'k': 1, 'init': 'product', 'widths': [256, 256]}."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DflearnError(f"{what} option '{pair}' is not KEY=VALUE (e.g. k=1)")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value  # a bare word: a string
    return out


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """The flags shared by every command that builds runs (train, and experiment grids)."""
    g = p.add_argument_group("what to train")
    g.add_argument("--model", default=S, help="model name (default mlp; see 'dflearn models')")
    g.add_argument("-m", "--model-opt", action="append", metavar="KEY=VALUE", default=S,
                   help="model option, repeatable, e.g. -m widths=[256,256] -m activation=tanh")
    g.add_argument("-o", "--rule-opt", action="append", metavar="KEY=VALUE", default=S,
                   help="rule option, repeatable, e.g. -o k=1 or -o init=product (see 'dflearn rules')")
    g.add_argument("--dataset", default=S, help="data set (default digits, bundled; see 'dflearn datasets')")
    g.add_argument("--data-dir", default=S, help="folder holding the data sets (default $DFLEARN_DATA_DIR or ~/.cache/dflearn)")
    g.add_argument("--download", action="store_true", default=S, help="download missing data files (checksums verified)")
    g.add_argument("--augment", default=S, help="training augmentation, e.g. flip (default none)")
    g = p.add_argument_group("how to train")
    g.add_argument("--epochs", type=int, default=S, help="epochs (default 10)")
    g.add_argument("--batch-size", type=int, default=S, help="minibatch size (default 64)")
    g.add_argument("--max-steps-per-epoch", type=int, default=S, metavar="N",
                   help="end each epoch after N batches (default 0: the whole training set); for quick checks")
    g.add_argument("--optimizer", choices=["adam", "sgd"], default=S, help="optimizer (default adam)")
    g.add_argument("--lr", type=float, default=S, help="learning rate (default 1e-3)")
    g.add_argument("--weight-decay", type=float, default=S, help="weight decay (default 0)")
    g.add_argument("--momentum", type=float, default=S, help="SGD momentum (default 0.9)")
    g.add_argument("--nesterov", action="store_true", default=S, help="Nesterov momentum for SGD")
    g.add_argument("--schedule", choices=["none", "paper", "exp"], default=S,
                   help="LR schedule: paper = x0.25 at 50/75/89/94%% of epochs; exp = x gamma per epoch (default none)")
    g.add_argument("--gamma", type=float, default=S, help="decay per epoch for --schedule exp (default 0.8)")
    g.add_argument("--seed", type=int, default=S, help="seed for weights, feedback and data order (default 0)")
    g.add_argument("--device", default=S, help="auto (default: CUDA if present), cpu, cuda, cuda:N")
    g.add_argument("--threads", type=int, default=S, metavar="N",
                   help="CPU threads (default: torch's, recorded in config.json); numbers are reproducible "
                        "at a fixed thread count")
    g.add_argument("--precision", choices=["fp32", "bf16"], default=S,
                   help="fp32 (default) or bf16: the step and evaluation under torch.autocast, parameters fp32")
    g.add_argument("--compile", action="store_true", default=S, help="torch.compile the model (in place)")
    g.add_argument("--val-fraction", type=float, default=S, metavar="F",
                   help="hold out this fraction of the training split for validation, stratified, with a fixed "
                        "seed independent of --seed (default 0.1; 0: none); the summary reports the test accuracy "
                        "at the validation-best epoch")
    g = p.add_argument_group("transfer: start from another run, keep blocks fixed (names: feedback points, "
                             "'head', or module names; a wrong name lists the valid ones)")
    g.add_argument("--init-from", metavar="RUN", default=S,
                   help="copy model weights from RUN (a run directory, i.e. its checkpoint.pt, or a .pt such as RUN/best.pt)")
    g.add_argument("--init-blocks", metavar="NAMES", default=S,
                   help="with --init-from: copy only these blocks (comma list); the others keep this run's initialisation")
    g.add_argument("--init-feedback", action="store_true", default=S,
                   help="with --init-from: also copy the rule's feedback state")
    g.add_argument("--freeze", metavar="NAMES", default=S,
                   help="keep these blocks' parameters fixed (comma list; also their BN statistics)")
    g = p.add_argument_group("learned feedback (LAS/LTAS local modules, DKP matrices); default: the rule's own, else the network's")
    g.add_argument("--feedback-optimizer", choices=["adam", "sgd"], default=S)
    g.add_argument("--feedback-lr", type=float, default=S)
    g.add_argument("--feedback-weight-decay", type=float, default=S)
    g.add_argument("--feedback-schedule", choices=["none", "paper", "exp"], default=S)
    g.add_argument("--feedback-gamma", type=float, default=S)


def config_overrides(args: argparse.Namespace) -> dict:
    """The Config fields the user set explicitly on the command line."""
    from ..training import Config

    fields = Config().to_dict()
    out = {k: v for k, v in vars(args).items() if k in fields}
    if hasattr(args, "rule_opt"):
        out["rule_options"] = parse_options(args.rule_opt, "rule")
    if hasattr(args, "model_opt"):
        out["model_options"] = parse_options(args.model_opt, "model")
    return out


def resolved_config(args: argparse.Namespace) -> dict:
    """What config.json will hold for these flags (--print-config)."""
    from ..training import Config

    return Config.from_dict({**Config().to_dict(), **config_overrides(args)}).resolved().to_dict()


def run(args: argparse.Namespace) -> int:
    from ..training import distributed, fit

    if args.nproc < 1:
        raise DflearnError(f"--nproc must be at least 1, got {args.nproc}")
    if hasattr(args, "out") and hasattr(args, "resume"):
        raise DflearnError("give --out (a new run) or --resume DIR (continue one), not both")
    overrides = config_overrides(args)
    if args.nproc > 1:
        from ..training import Config
        if not hasattr(args, "resume"):  # refuse bad values here, not in every worker
            Config.from_dict({**Config().to_dict(), **overrides}).resolved()
        run_dir = getattr(args, "resume", None) or getattr(args, "out", None)
        distributed.launch(args.nproc, distributed.without_option(args.argv, "--nproc"), run_dir)
        return 0
    from ..experiments import loggers

    observers = loggers.make_observers(**loggers.from_args(args))
    try:
        with distributed.peer_errors():
            fit(out=getattr(args, "out", None), resume=getattr(args, "resume", None), progress=not args.quiet,
                observers=observers, **overrides)
    finally:
        distributed.shutdown()
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train one model under one rule and save the run",
                       description="Train a model under a learning rule. With no options: LAS on the bundled "
                                   "digits, MLP 64-1024-1024-10, 10 epochs, in seconds.",
                       epilog="Example: dflearn train --rule las --model mlp-mnist --dataset mnist --lr 1e-4 "
                              "--epochs 2 --align-every 50 --out runs/las-mnist")
    p.add_argument("--rule", default=S, help="learning rule (default las; see 'dflearn rules')")
    add_config_arguments(p)
    configfile.add_arguments(p)
    g = p.add_argument_group("output")
    g.add_argument("--out", default=S, help="run directory (default runs/DATASET-MODEL-RULE-seedN, made unique)")
    g.add_argument("--resume", metavar="DIR", default=S,
                   help="continue the run in DIR from its last checkpoint (options, if given, must match the run's)")
    g.add_argument("--align-every", type=int, default=S,
                   help="measure each layer's alignment with BP every K steps and log epoch means (default 0: off)")
    g.add_argument("--align-measure", default=S, **ALIGN_MEASURE)
    from ..experiments import loggers
    loggers.add_arguments(g)
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    g.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="data-parallel on N local processes (launches torchrun; --batch-size is the global batch); "
                        "see docs/distributed.md")
    p.set_defaults(func=run, resolved_config=resolved_config)
