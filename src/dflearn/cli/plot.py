"""`dflearn plot RUN_OR_GRID... --out DIR`: learning curves and alignment PNGs."""
from __future__ import annotations


def run(args) -> int:
    from ..experiments.plots import plot_all

    for path in plot_all(args.paths, args.out):
        print(f"wrote {path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("plot", help="plot test accuracy / loss per epoch and alignment per layer (PNG)",
                       description="Plot runs or grid folders: test accuracy and loss per epoch (mean and "
                                   "±1 std band over seeds, grouped by rule, one colour per rule in every figure), and each "
                                   "alignment diagnostic logged with --align-every per hidden block, at every "
                                   "measurement's training step. One set of figures per data set and model.",
                       epilog="Example: dflearn plot runs/fc-mnist --out runs/fc-mnist/plots")
    p.add_argument("paths", nargs="+", metavar="RUN_OR_GRID", help="run directories or grid folders")
    p.add_argument("--out", required=True, help="folder for the PNG files")
    p.set_defaults(func=run)
