#!/usr/bin/env bash
# Engine before/after: bench.py's step ratios to BP in two checkouts, run alternately (A B A B ...)
# so that both see the same machine; the table takes each ratio's median over the rounds.
#   benchmarks/engine_ab.sh OLD_CHECKOUT NEW_CHECKOUT OUT [ROUNDS]
set -euo pipefail
old=$1 new=$2 out=$3 rounds=${4:-2}
args=(--sections steps --models mlp-mnist,mlp-cifar,conv3 --rules bp,shallow,dfa,sdfa,drtp,dkp,las,ltas
      --repeats 7 --threads 1)
mkdir -p "$out"
for r in $(seq 1 "$rounds"); do
  for side in old new; do
    tree=$old; [ "$side" = new ] && tree=$new
    (cd "$tree" && PYTHONPATH=src:benchmarks python benchmarks/bench.py "${args[@]}" --out "$out/$side-$r" >/dev/null)
  done
done
python - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
runs = {side: [json.load(open(f"{out}/{side}-{r}/bench.json"))["steps"] for r in range(1, rounds + 1)]
        for side in ("old", "new")}
models = list(runs["new"][0])
rules = [r for r in runs["new"][0][models[0]] if r not in ("bp", "bp_runs")]
print("| model | rule | before (x BP) | after (x BP) |\n|---|---|---:|---:|")
for m in models:
    for rule in rules:
        med = {s: statistics.median(run[m][rule]["ratio"] for run in runs[s]) for s in runs}
        print(f"| {m} | {rule} | {med['old']:.3f} | {med['new']:.3f} |")
    bp = {s: statistics.median(statistics.median(run[m]["bp_runs"]) for run in runs[s]) for s in runs}
    print(f"| {m} | bp (ms) | {bp['old']:.1f} | {bp['new']:.1f} |")
PY
