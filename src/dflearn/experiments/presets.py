"""The papers' experiments as grids, at three budgets.

`paper`: the papers' epochs and settings, for a GPU. `short`: about
an hour of an idle 2-core CPU. `smoke`: seconds to a minute, a few batches per
epoch, to check that everything runs. A preset is only a `Grid` per budget;
`dflearn reproduce` runs it with the same machinery as `dflearn compare`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import DflearnError
from ..training import Config
from .grid import Grid, run_name

BUDGETS = ("smoke", "short", "paper")
FC_RULES = ["bp", "shallow", "dfa", "las", "ltas"]
SMOKE = {"epochs": 1, "max_steps_per_epoch": 5}
SEEDS = [0, 1, 2]  # every short budget (and most paper ones): a claim about rules needs a spread over seeds

# Rough cost model for `--list`: forward multiply-adds per sample (M) and full training-set sizes.
# Seconds ~ training samples x 3 (fwd + bwd) x 2 MACs / throughput. A model's throughput is what
# its grids achieved on this project's 2-core CPU, evaluation and data included (runs two at a
# time, --jobs 2, or one at 2 threads): mlp-mnist 3-epoch runs took 12 s an epoch (50e9);
# mlp-cifar 200-batch runs ~80 s (46e9); the conv nets' BP step at batch 64 is 0.55 s
# (benchmarks/results/bench.md), 106e9 for training alone, ~80e9 with an evaluation of the
# 10k test images after 150 batches; the ViT and GPT short grids took 36 and 68 min (37e9, 35e9).
# Other models fall back to CPU_FLOPS. For text a sample is one window of 128 characters: the
# 4x128 GPT does ~0.93M MACs per token (0.79M in its Linear layers, the rest attention), 119M per
# window; an epoch of Tiny Shakespeare is 1,003,854 / 128 windows. The ViT 4x128 on 32x32 (64
# patches): ~55M.
MACS = {"mlp-mnist": 1.9e6, "mlp-cifar": 46.6e6, "conv3": 151e6, "conv3bn": 151e6, "resnet18": 145e6,
        "dkpnet": 8.3e6, "gpt": 119e6, "gpt-sublayer": 119e6, "vit": 55e6,
        "alexnet": 95e6}  # alexnet at -m resize=64 (the CPU budgets); ~710e6 at 224
TRAIN_SIZE = {"mnist": 60_000, "fashion-mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000,
              "tinyimagenet": 100_000, "digits": 1_437, "tinyshakespeare": 7_842}
PIXELS = {"tinyimagenet": 4}  # 64x64 inputs cost ~4x the 32x32 ones for convnets
CPU_FLOPS = 25e9  # effective, 2 cores, for a model without a measured throughput
THROUGHPUT = {"mlp-mnist": 50e9, "mlp-cifar": 46e9, "conv3": 80e9, "conv3bn": 80e9, "resnet18": 75e9,
              "gpt": 35e9, "gpt-sublayer": 35e9, "vit": 37e9}


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    source: str  # where the settings and the numbers to compare with come from
    build: Callable[[str], Grid]  # budget -> grid

    def grid(self, budget: str) -> Grid:
        if budget not in BUDGETS:
            raise DflearnError(f"unknown budget '{budget}'; choose smoke, short or paper")
        return self.build(budget)


def estimate_seconds(grid: Grid) -> float:
    """CPU seconds the grid should take (very rough; see the cost model above)."""
    total = 0.0
    for _, c in grid.runs():
        macs = MACS.get(c.model, 50e6) * (PIXELS.get(c.dataset, 1) if c.model in ("conv3", "conv3bn", "resnet18")
                                          else 1)
        samples = TRAIN_SIZE.get(c.dataset, 50_000)
        if c.max_steps_per_epoch:
            samples = min(samples, c.max_steps_per_epoch * c.batch_size)
        total += c.epochs * samples * 6 * macs / THROUGHPUT.get(c.model, CPU_FLOPS)
    return total


def _las_alignment(budget: str) -> Grid:
    # The paper: plain SGD lr 1e-4, 100 epochs, alignment at every iteration. Here every 10th step:
    # a measurement costs two more passes, so every step would triple a CPU step's cost, and 9,380
    # points a curve are more than the figure resolves (--align-every 1 gives every step). On a CPU
    # budget SGD lr 1e-4 moves nothing in a few epochs, so short/smoke switch to Adam lr 1e-4.
    base = {"dataset": "mnist", "model": "mlp-mnist", "batch_size": 64, "lr": 1e-4}
    rules, options = ["dfa", "las", "ltas"], {"dfa": {"init": "product"}}  # LAS/LTAS: product init by default
    if budget == "paper":
        return Grid({**base, "optimizer": "sgd", "momentum": 0.0, "epochs": 100, "align_every": 10},
                    rules, [0], rule_options=options)
    if budget == "short":
        return Grid({**base, "optimizer": "adam", "epochs": 5, "align_every": 50}, rules, SEEDS,
                    rule_options=options)
    return Grid({**base, **SMOKE, "optimizer": "adam", "align_every": 2}, rules, [0], rule_options=options)


def _las_fc_table(budget: str) -> Grid:
    epochs = {"paper": {"mnist": 100, "cifar10": 300, "cifar100": 500},
              "short": {"mnist": 3, "cifar10": 1, "cifar100": 1}}.get(budget)
    variants = [{"dataset": "mnist", "model": "mlp-mnist"}, {"dataset": "cifar10", "model": "mlp-cifar"},
                {"dataset": "cifar100", "model": "mlp-cifar"}]
    # the paper grid-searched Adam's lr and does not report the winner; 1e-4 is sound for all three
    base = {"optimizer": "adam", "lr": 1e-4, "batch_size": 64, "augment": "flip", "schedule": "paper"}
    if epochs is None:
        return Grid({**base, **SMOKE}, FC_RULES, [0], variants)
    for v in variants:
        v["epochs"] = epochs[v["dataset"]]
        if budget == "short" and v["dataset"] != "mnist":  # the 4096-wide CIFAR nets: 200 batches
            v["max_steps_per_epoch"] = 200
    return Grid(base, FC_RULES, SEEDS, variants)


def _las_cnn_table(budget: str) -> Grid:
    augments = ["flip", "randaugment+cutout+flip"]
    variants = [{"dataset": d, "model": m, "augment": a}
                for d in ("cifar10", "cifar100") for a in augments for m in ("conv3", "conv3bn", "resnet18")]
    variants.append({"dataset": "tinyimagenet", "model": "resnet18", "augment": augments[1]})
    for v in variants:  # the paper ran the Shallow control on Conv3 with flip only
        v["rules"] = FC_RULES if (v["model"], v["augment"]) == ("conv3", "flip") else ["bp", "dfa", "las", "ltas"]
    # epochs are not stated for the CNNs; 100 with the reference's step schedule
    base = {"optimizer": "adam", "lr": 1e-4, "batch_size": 64, "schedule": "paper", "epochs": 100}
    if budget == "paper":
        return Grid(base, [], [0], variants)
    if budget == "short":  # ~0.55 s a Conv3 step: Conv3 and Conv3+BN with flip, 100 batches, fit an hour;
        # ResNet18 and the RandAugment cells need more steps than a CPU hour holds (a GPU's budget)
        short = [v for v in variants if v["model"] != "resnet18" and v["augment"] == "flip"]
        return Grid({**base, "epochs": 1, "max_steps_per_epoch": 100}, [], SEEDS, short)
    return Grid({**base, **SMOKE}, [], [0], variants)


def _dkp_cifar10(budget: str) -> Grid:
    # (ref) forward weights SGD+Nesterov; B has the rule's own Adam 1e-4, wd 1e-6, x0.8 per epoch;
    # DFA's and DKP's B drawn by kaiming_uniform_ on the reference's (d_L, n_i) tensor: bound sqrt(6/n_i)
    base = {"dataset": "cifar10", "model": "dkpnet", "optimizer": "sgd", "nesterov": True, "lr": 5e-4,
            "momentum": 0.9, "weight_decay": 1e-6, "batch_size": 64}
    rules, options = ["bp", "dkp", "dfa"], {"dkp": {"init": "kaiming_n"}, "dfa": {"init": "kaiming_n"}}
    if budget == "paper":
        return Grid({**base, "epochs": 50}, rules, [0, 1, 2, 3], rule_options=options)
    if budget == "short":
        return Grid({**base, "epochs": 3}, rules, SEEDS, rule_options=options)
    return Grid({**base, **SMOKE}, rules, [0], rule_options=options)


def _sdfa_k1(budget: str) -> Grid:
    variants = [{"dataset": "mnist", "model": "mlp-mnist"}, {"dataset": "cifar10", "model": "mlp-cifar"}]
    base = {"optimizer": "adam", "lr": 1e-4, "batch_size": 64}
    rules, options = ["bp", "dfa", "sdfa"], {"sdfa": {"k": 1}}
    if budget == "paper":
        return Grid({**base, "epochs": 100}, rules, SEEDS, variants, options)
    if budget == "short":
        short = [{**variants[0], "epochs": 2}, {**variants[1], "epochs": 1, "max_steps_per_epoch": 200}]
        return Grid(base, rules, SEEDS, short, options)
    return Grid({**base, **SMOKE}, rules, [0], variants, options)


TRANSFORMER_RULES = ["bp", "shallow", "dfa", "sdfa", "dkp", "las", "ltas"]


def _dfa_transformer(budget: str) -> Grid:
    # The small GPT (4 blocks x 128 wide, 4 heads, context 128) on Tiny Shakespeare, points after
    # every block (gpt) or every sublayer (gpt-sublayer), as Launay et al. compare. BP ignores the
    # points, so it runs once (on gpt). Adam lr 1e-3 for every rule, no schedule, no dropout.
    # short: 4 epochs x 40 batches of 32 windows (160 steps, ~65% of the text), a full test
    # evaluation (111,488 characters) after each epoch; measured 0.455 s per BP step (DFA 0.41,
    # LAS 0.41, DKP 0.49, Shallow 0.26) on one thread of this 2-core CPU with other jobs running,
    # and ~4 s per evaluation, so ~90 s a run and ~1 h for the 13 cells x 3 seeds.
    base = {"dataset": "tinyshakespeare", "optimizer": "adam", "lr": 1e-3}
    variants = [{"model": "gpt"}, {"model": "gpt-sublayer", "rules": TRANSFORMER_RULES[1:]}]
    if budget == "paper":  # a GPU: 5,000 steps of 64 windows (~41 passes over the text)
        return Grid({**base, "batch_size": 64, "epochs": 20, "max_steps_per_epoch": 250},
                    TRANSFORMER_RULES, SEEDS, variants)
    if budget == "short":
        return Grid({**base, "batch_size": 32, "epochs": 4, "max_steps_per_epoch": 40},
                    TRANSFORMER_RULES, SEEDS, variants)
    return Grid({**base, "batch_size": 16, "epochs": 1, "max_steps_per_epoch": 3}, TRANSFORMER_RULES, [0], variants)


VIT_RULES = ["bp", "dfa", "dkp", "las", "ltas"]


def _vit_cifar10(budget: str) -> Grid:
    # The small ViT (patch 4, 4 blocks x 128 wide, 4 heads, mean pooling, a point after every
    # block) on CIFAR-10 with flips, Adam lr 1e-3 for every rule, as the GPT preset.
    # short: 3 epochs x 70 batches of 64 (13,440 images, 1.5 passes over the 10k subset's 9k
    # training images), test after each epoch; a BP step is ~0.22 s and a test pass ~12 s on
    # the idle 2-core CPU, so ~80 s a run and ~20 min for 5 rules x 3 seeds.
    base = {"dataset": "cifar10", "model": "vit", "optimizer": "adam", "lr": 1e-3, "augment": "flip"}
    if budget == "paper":  # a GPU: the full training set
        return Grid({**base, "batch_size": 128, "epochs": 100}, VIT_RULES, SEEDS)
    if budget == "short":
        return Grid({**base, "batch_size": 64, "epochs": 3, "max_steps_per_epoch": 70}, VIT_RULES, SEEDS)
    return Grid({**base, **SMOKE, "batch_size": 16}, VIT_RULES, [0])


CONV3_BLOCKS = ["3", "7", "11"]  # Conv3's three conv blocks, by feedback point (conv 0, 4, 8)


def _sdfa_transfer(budget: str) -> Grid:
    """Seed 002's accuracy experiment: Conv3 trained by BP on CIFAR-10; then its conv
    blocks copied and frozen, its FC layers freshly initialised (this run's seed) and
    trained by BP, DFA and sparse DFA with k=1 and k=5 (of d_L=10). Each seed's transfer
    runs start from that seed's BP run, a run of the same grid (it goes first)."""
    base = {"dataset": "cifar10", "model": "conv3", "augment": "flip", "optimizer": "adam", "lr": 1e-4,
            "batch_size": 64}
    if budget == "paper":
        (e1, e2), seeds, extra = (100, 100), SEEDS, {"schedule": "paper"}
    elif budget == "short":  # on the 10k-image CIFAR-10 subset: ~1 min per BP epoch, ~0.4 min frozen
        (e1, e2), seeds, extra = (5, 3), SEEDS, {"max_steps_per_epoch": 150}
    else:
        (e1, e2), seeds, extra = (1, 1), [0], {"max_steps_per_epoch": SMOKE["max_steps_per_epoch"]}
    pretrain = {"rules": ["bp"], "epochs": e1}
    source = run_name(Config.from_dict({**base, **extra, "rule": "bp", "seed": 0}))
    assert source.endswith("-seed0")
    transfer = {"init_from": source[:-len("0")] + "{seed}", "init_blocks": CONV3_BLOCKS, "freeze": CONV3_BLOCKS}
    return Grid({**base, **extra}, [], seeds, [
        pretrain,
        {"rules": ["bp", "dfa", "sdfa"], **transfer, "epochs": e2},
        {"rules": ["sdfa"], "rule_options": {"k": 5}, **transfer, "epochs": e2},
    ], rule_options={"sdfa": {"k": 1}})


def _dkp_cifar100(budget: str) -> Grid:
    """Seed 003's CIFAR-100 experiment: AlexNet-BN, BP / DKP / DFA, with the reference's
    optimisers: SGD momentum 0.9, lr 0.1, batch 256, weight decay 1e-4 (BP, DFA) or 1e-6
    (DKP's forward weights); DKP's B zero-initialised with its own Adam lr 0.01, wd 1e-6,
    no schedule (the reference's StepLR on B is commented out). 90 epochs at 224 pixels
    (paper); the CPU budgets resize to 64 pixels."""
    base = {"dataset": "cifar100", "model": "alexnet", "augment": "flip", "optimizer": "sgd", "lr": 0.1,
            "momentum": 0.9, "batch_size": 256, "weight_decay": 1e-4}
    dkp = {"rules": ["dkp"], "weight_decay": 1e-6, "rule_options": {"init": "zeros"}, "feedback_optimizer": "adam",
           "feedback_lr": 0.01, "feedback_weight_decay": 1e-6, "feedback_schedule": "none"}
    variants = [{"rules": ["bp", "dfa"]}, dkp]
    if budget == "paper":
        return Grid({**base, "epochs": 90}, [], SEEDS, variants)
    small = {"model_options": {"resize": 64}}
    if budget == "short":
        # 35 batches of 256 = the 9,000 training images of the 10k subset once validation is held out
        return Grid({**base, **small, "epochs": 2, "max_steps_per_epoch": 35}, [], SEEDS, variants)
    return Grid({**base, **small, **SMOKE}, [], [0], variants)


PRESETS = {p.name: p for p in [
    Preset("las-alignment", "LAS paper Fig. 4: layer-wise alignment with BP of DFA, LAS, LTAS; MNIST, FC 2x1024, "
           "feedback from the initial forward weights (paper: SGD lr 1e-4, 100 epochs; smoke/short: Adam lr 1e-4)",
           'Yang, Lee & Park, "Direct Feedback Learning With Local Alignment Support" (IEEE Access), Fig. 4', _las_alignment),
    Preset("las-fc-table", "LAS paper Table 1: BP, Shallow, DFA, LAS, LTAS on MNIST (784-1024-1024-10), CIFAR-10 "
           "and CIFAR-100 (3072-4096x3-d_L), Adam, flip", 'Yang, Lee & Park, "Direct Feedback Learning With Local Alignment Support" (IEEE Access), Table 1 (FC networks)',
           _las_fc_table),
    Preset("las-cnn-table", "LAS paper Table 2: Conv3, Conv3+BN, ResNet18 x flip / RandAugment+Cutout+flip on "
           "CIFAR-10, CIFAR-100, and ResNet18 on TinyImageNet", 'Yang, Lee & Park, "Direct Feedback Learning With Local Alignment Support" (IEEE Access), Table 2 (CNNs)',
           _las_cnn_table),
    Preset("dkp-cifar10", "DKP paper: BP, DKP, DFA on CIFAR-10 with the small conv net, SGD Nesterov lr 5e-4, "
           "4 seeds", '"Learning the Connections in Direct Feedback Alignment" (Direct Kolen-Pollack): CIFAR-10 BP 70.47, DKP 67.52, DFA 61.02', _dkp_cifar10),
    Preset("sdfa-transfer", "sparse-DFA paper's accuracy experiment: Conv3 trained by BP on CIFAR-10, its conv "
           "blocks frozen, FC layers re-initialised and trained by BP, DFA, sparse DFA k=1 and k=5",
           'Crafton et al., "Direct Feedback Alignment With Sparse Connections for Local Learning" (Front. '
           'Neurosci. 2019): DFA on FC layers over transferred conv layers is competitive with BP', _sdfa_transfer),
    Preset("dkp-cifar100", "DKP paper: BP, DKP, DFA on CIFAR-100 with the reference's AlexNet-BN, SGD lr 0.1 "
           "(paper: 224 px, 90 epochs; smoke/short: 64 px)",
           '"Learning the Connections in Direct Feedback Alignment" (DKP), reference code: CIFAR-100 BP 66.40, '
           'DKP 40.85, DFA 14.15 (DFA peaks near 17% then collapses)', _dkp_cifar100),
    Preset("sdfa-k1", "sparse-DFA paper: sparse DFA with one feedback connection per unit (k=1) beside DFA and BP, "
           "FC nets on MNIST and CIFAR-10", 'Crafton et al., "Direct Feedback Alignment With Sparse Connections for Local Learning" (Front. Neurosci. 2019)', _sdfa_k1),
    Preset("dfa-transformer", "a character GPT (4 x 128, context 128) on Tiny Shakespeare under BP, Shallow, DFA, "
           "sDFA, DKP, LAS, LTAS, feedback points after every block and after every sublayer; test loss in "
           "nats/char and bits per character",
           'Launay et al., "Direct Feedback Alignment Scales to Modern Deep Learning Tasks and Architectures" '
           '(NeurIPS 2020), transformer LM (WikiText-103, not ours); Filipovich et al., "Scaling Laws Beyond '
           'Backpropagation" (2022)', _dfa_transformer),
    Preset("vit-cifar10", "a small ViT (patch 4, 4 x 128, mean pooling) on CIFAR-10 under BP, DFA, DKP, LAS, LTAS, "
           "a feedback point after every block", 'Launay et al., "Direct Feedback Alignment Scales to Modern Deep '
           'Learning Tasks and Architectures" (NeurIPS 2020) train transformers with DFA (language, not vision)',
           _vit_cifar10),
]}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise DflearnError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)} (see --list)")
    return PRESETS[name]
