"""`dflearn robust RUN... [--twin BP_RUN]`: clean and adversarial accuracy per eps (FGSM, PGD)."""
from __future__ import annotations

from fractions import Fraction


def parse_eps(text: str) -> list[float]:
    from ..errors import DflearnError

    try:
        return [float(Fraction(t.strip())) for t in text.split(",") if t.strip()]
    except (ValueError, ZeroDivisionError):
        raise DflearnError(f"--eps '{text}' is not a comma-separated list of numbers (e.g. 0,1/255,8/255)") from None


def run(args) -> int:
    import json
    from pathlib import Path

    from .. import robust
    from ..errors import DflearnError

    if args.limit < 1 or args.steps < 1:
        raise DflearnError("--limit and --steps must be at least 1")
    rows = robust.evaluate_runs(args.runs, parse_eps(args.eps), [a.strip() for a in args.attacks.split(",")],
                                twin=args.twin, limit=args.limit, steps=args.steps, device=args.device,
                                progress=not args.quiet)
    table = robust.markdown(rows)
    print(table, end="")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "robust.json").write_text(json.dumps(rows, indent=1) + "\n")
        (out / "robust.md").write_text(table)
        print(f"wrote {robust.plot(rows, out / 'robust.png')}, robust.json and robust.md")
    return 0


def register(sub) -> None:
    p = sub.add_parser("robust", help="adversarial robustness of trained runs (FGSM, PGD; white-box and transfer)",
                       description="Clean and adversarial test accuracy of each run at every eps, with the true "
                                   "gradient of the trained network (never a rule's pseudo-gradient). eps is in "
                                   "pixel units of [0, 1] (8/255 is the usual CIFAR budget).",
                       epilog="Example: dflearn robust runs/g/*-seed0 --twin runs/g/digits-mlp-noaug-lr0.001-bp-seed0 --out runs/g/robust")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    p.add_argument("--eps", default="0,1/255,2/255,4/255,8/255,16/255", help="comma-separated budgets (fractions allowed)")
    p.add_argument("--attacks", default="fgsm,pgd", help="fgsm, pgd or both (default both)")
    p.add_argument("--steps", type=int, default=10, help="PGD steps (default 10)")
    p.add_argument("--twin", default=None, metavar="BP_RUN",
                   help="also transfer attacks crafted on this run (a BP-trained twin) to each run")
    p.add_argument("--limit", type=int, default=1000, help="N test images, a fixed random draw, the same for every run (default 1000)")
    p.add_argument("--device", default="auto", help="auto (default: CUDA if present), cpu, cuda, cuda:N")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", default=None, help="folder for robust.json, robust.md and robust.png")
    p.set_defaults(func=run)
