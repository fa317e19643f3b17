"""Language models and transformers in the trainer: text runs (metrics, resume, errors),
`dflearn sample`, the ViT, the dfa-transformer preset, learning under BP (and DFA)."""
import json
import math
from collections import Counter

import pytest
import torch

import dflearn
from dflearn.cli import main
from dflearn.data.text import TextBatches, corpus_from_text
from dflearn.errors import DflearnError
from dflearn.feedback.point import FeedbackPoint
from dflearn.models import build_model

TEXT = "the quick brown fox jumps over the lazy dog; ROMEO: what light through yonder window breaks?\n" * 60
TINY = {"layers": 1, "width": 32, "heads": 2, "context": 16}


def quiet(*args, **kwargs):
    pass


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def text_run(out, path, rule="bp", epochs=1, steps=4, **options):
    return dflearn.fit(rule=rule, dataset=f"text:{path}", model="gpt", model_options={**TINY, **options},
                       epochs=epochs, max_steps_per_epoch=steps, batch_size=8, out=out, progress=False, log=quiet)


def test_text_run_writes_per_token_metrics(tmp_path, corpus_file):
    summary = text_run(tmp_path / "run", corpus_file, epochs=2)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["step"] == 4 * r["epoch"] for r in rows)
    for r in rows:
        assert 0 <= r["test_acc"] <= 1 and 0 <= r["train_acc"] <= 1
        assert r["test_bpc"] == pytest.approx(r["test_loss"] / math.log(2))
    assert summary["final_test_loss"] == rows[-1]["test_loss"]
    assert summary["final_test_bpc"] == rows[-1]["test_bpc"]
    assert summary["best_test_bpc"] == min(r["test_bpc"] for r in rows)
    assert summary["final_test_accuracy"] == rows[-1]["test_acc"]
    assert summary["vocab_size"] == len(set(TEXT))


def test_evaluation_is_the_mean_over_every_test_character(corpus_file):
    """test_loss is the cross-entropy averaged over all N x T predicted characters."""
    corpus = dflearn.load_dataset(f"text:{corpus_file}")
    torch.manual_seed(0)
    model = build_model("gpt", corpus.input_shape, corpus.num_classes, **TINY).eval()
    x, y = corpus.eval_windows(16)
    with torch.no_grad():
        logits = model(x)
    want = torch.nn.functional.cross_entropy(logits.reshape(-1, corpus.num_classes), y.reshape(-1))
    batches = TextBatches(corpus, "test", 5, 16)
    got = sum(torch.nn.functional.cross_entropy(model(a).flatten(0, 1), b.flatten(), reduction="sum")
              for a, b in batches) / y.numel()
    assert len(batches) == -(-len(x) // 5)
    torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)


def test_text_run_resumes_exactly(tmp_path, corpus_file):
    whole = text_run(tmp_path / "a", corpus_file, epochs=2, steps=3)
    text_run(tmp_path / "b", corpus_file, epochs=1, steps=3)
    resumed = dflearn.fit(resume=tmp_path / "b", epochs=2, progress=False, log=quiet)
    assert resumed["final_test_loss"] == whole["final_test_loss"]
    assert resumed["final_train_loss"] == whole["final_train_loss"]


@pytest.mark.parametrize("model, dataset, message", [
    ("gpt", "digits", "gpt models text"),
    ("mlp", "text", "takes images, not text"),
])
def test_model_and_data_mismatch_is_one_line(tmp_path, corpus_file, model, dataset, message):
    dataset = f"text:{corpus_file}" if dataset == "text" else dataset
    with pytest.raises(DflearnError, match=message) as info:
        dflearn.fit(rule="bp", dataset=dataset, model=model, epochs=1, out=tmp_path / "r", progress=False, log=quiet)
    assert "\n" not in str(info.value)


def test_text_data_set_needs_a_path():
    with pytest.raises(DflearnError, match="text:PATH"):
        dflearn.load_dataset("text")


# ------------------------------------------------------------------ sampling
@pytest.fixture
def lm_run(tmp_path, corpus_file):
    text_run(tmp_path / "lm", corpus_file, steps=6)
    return tmp_path / "lm"


def sample(capsys, *argv):
    code = main(["sample", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_sample_is_reproducible_and_starts_with_the_prompt(capsys, lm_run):
    code, a, _ = sample(capsys, lm_run, "--prompt", "ROMEO:", "--tokens", 60, "--temperature", 0.8, "--seed", 0)
    assert code == 0
    _, b, _ = sample(capsys, lm_run, "--prompt", "ROMEO:", "--tokens", 60, "--temperature", 0.8, "--seed", 0)
    _, c, _ = sample(capsys, lm_run, "--prompt", "ROMEO:", "--tokens", 60, "--temperature", 0.8, "--seed", 1)
    assert a == b and a != c
    assert a.startswith("ROMEO:") and len(a.rstrip("\n")) >= 60  # prompt + 60 characters (some may be newlines)
    assert len(a) == len("ROMEO:") + 60 + 1  # and print's newline
    assert set(a[:-1]) <= set(TEXT)


def test_sample_command_in_a_new_process_gives_the_same_text(capsys, lm_run):
    import os
    import subprocess
    import sys

    args = [str(lm_run), "--prompt", "the ", "--tokens", "40", "--seed", "3"]
    out = subprocess.run([sys.executable, "-m", "dflearn", "sample", *args], capture_output=True, text=True,
                         env=os.environ.copy(), check=True).stdout
    assert out.startswith("the ") and out == sample(capsys, *args)[1]


@pytest.mark.parametrize("extra, message", [
    (["--prompt", "JULIET€"], "not in the training text's vocabulary"),
    (["--temperature", "0"], "--temperature must be a positive number"),
    (["--temperature", "-1"], "--temperature must be a positive number"),
    (["--tokens", "-5"], "--tokens must be 0 or more"),
])
def test_sample_errors_are_one_line(capsys, lm_run, extra, message):
    code, out, err = sample(capsys, lm_run, *extra)
    assert code == 1 and message in err and err.count("\n") == 1 and out == ""


def test_sample_refuses_a_classifier_run(capsys, tmp_path):
    dflearn.fit(rule="bp", epochs=1, max_steps_per_epoch=2, out=tmp_path / "digits", progress=False, log=quiet)
    code, _, err = sample(capsys, tmp_path / "digits")
    assert code == 1 and "not on text" in err and err.count("\n") == 1


# ----------------------------------------------------------------------- ViT
def test_vit_shapes_and_points():
    model = build_model("vit", (3, 32, 32), 10, layers=3, width=32, heads=4)
    points = [m for m in model.modules() if isinstance(m, FeedbackPoint)]
    assert len(points) == 3
    seen = []
    hooks = [p.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape))) for p in points]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert seen == [(2, 64, 32)] * 3  # 8 x 8 patches of 4, features last
    for h in hooks:
        h.remove()
    with pytest.raises(DflearnError, match="does not divide"):
        build_model("vit", (1, 28, 28), 10, patch=5)


def test_vit_is_permutation_equivariant_before_pooling():
    """No mask: the blocks treat every patch alike (only the position embedding tells them apart)."""
    torch.manual_seed(0)
    model = build_model("vit", (1, 8, 8), 10, layers=2, width=16, heads=2).eval()
    tokens = torch.randn(3, 4, 16)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        torch.testing.assert_close(model.blocks(tokens)[:, perm], model.blocks(tokens[:, perm]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rule, bar", [("bp", 0.90), ("dfa", 0.25)])
def test_vit_learns_digits(tmp_path, rule, bar):
    """A 2-block ViT (width 64, patch 4: 4 tokens of the 8x8 digits), 6 epochs, Adam 1e-3, seed 0.
    BP reaches 0.955. DFA only clears chance (0.10) clearly (measured 0.33): under a pooled
    classifier engine v2 reads a (P, width) point as one flat vector with its own B rows per patch,
    while BP's gradient at the mean pooling is the same for every patch; a B shared by the patches
    (broadcast) reached 0.84 in the same setting (an experiment, not an engine option yet)."""
    s = dflearn.fit(rule=rule, model="vit", model_options={"layers": 2, "width": 64}, epochs=6,
                    out=tmp_path / rule, progress=False, log=quiet)
    assert s["best_test_accuracy"] >= bar, s["best_test_accuracy"]


def test_models_lists_the_transformers(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("gpt ", "gpt-sublayer", "vit "):
        assert name in out
    assert "mean pooling" in out and "'sublayer' (preset)" in out


# -------------------------------------------------------------------- preset
def test_dfa_transformer_preset():
    from dflearn.experiments.presets import get_preset

    for budget in ("smoke", "short", "paper"):
        runs = get_preset("dfa-transformer").grid(budget).runs()
        cells = {(c.model, c.rule) for _, c in runs}
        assert len(cells) == 13 and ("gpt-sublayer", "bp") not in cells  # BP ignores the points
        assert {c.rule for _, c in runs} == {"bp", "shallow", "dfa", "sdfa", "dkp", "las", "ltas"}
        assert all(c.dataset == "tinyshakespeare" for _, c in runs)
    assert len({c.seed for _, c in get_preset("dfa-transformer").grid("short").runs()}) == 3


# ------------------------------------------------------------------ learning
@pytest.fixture
def shakespeare_unigram(data_dir):
    if not (data_dir / "tinyshakespeare" / "input.txt").exists():
        pytest.skip("tinyshakespeare not in the data folder")
    corpus = dflearn.load_dataset("tinyshakespeare", data_dir)
    counts = Counter(corpus.train.tolist())
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values())  # nats per character, ~3.3


@pytest.mark.parametrize("rule, margin", [("bp", 0.6), ("dfa", 0.4)])  # measured 2.38 and 2.73 vs 3.31
def test_trainer_learns_tinyshakespeare_below_unigram_entropy(tmp_path, data_dir, shakespeare_unigram, rule, margin):
    """200 steps of a 2 x 64 GPT, context 32, batch 32, Adam 3e-3, through the trainer (one epoch)."""
    s = dflearn.fit(rule=rule, dataset="tinyshakespeare", data_dir=str(data_dir), model="gpt",
                    model_options={"layers": 2, "width": 64, "heads": 4, "context": 32}, lr=3e-3,
                    batch_size=32, epochs=1, max_steps_per_epoch=200, out=tmp_path / rule, progress=False, log=quiet)
    print(f"{rule}: test loss {s['final_test_loss']:.3f} nats vs unigram entropy {shakespeare_unigram:.3f}")
    assert s["final_test_loss"] < shakespeare_unigram - margin, (s["final_test_loss"], shakespeare_unigram)


def test_tinyshakespeare_download_is_checked(tmp_path, monkeypatch):
    """--download fetches input.txt into <root>/tinyshakespeare and the SHA256 still decides."""
    import dflearn.data.text as text

    def fake_fetch(urls, target, md5):
        assert "tinyshakespeare/input.txt" in urls[0]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("not the canonical file\n")

    monkeypatch.setattr(text, "fetch", fake_fetch)
    with pytest.raises(DflearnError, match="sha256 checksum mismatch"):
        dflearn.load_dataset("tinyshakespeare", tmp_path, download=True)
    assert (tmp_path / "tinyshakespeare" / "input.txt").exists()


# ------------------------------------------------- per-token DFA, by hand
def test_per_token_dfa_gradient_equals_autograd_of_each_block_alone():
    """Tiny GPT (2 blocks) under DFA in float64: each block's parameter gradient equals autograd of
    that block alone (its input detached) given g = e B_i^T at every position, with
    e = (softmax(logits) - onehot(y)) / (N T) computed by hand and B_i read from the rule's
    stored state; the head (final LN and Linear) gets the exact gradient."""
    import torch.nn.functional as F

    from dflearn.models.gpt import GPT

    torch.manual_seed(0)
    N, T, V, d = 3, 5, 7, 8
    model = GPT(V, context=T, layers=2, width=d, heads=2).double()
    x, y = torch.randint(0, V, (N, T)), torch.randint(0, V, (N, T))
    rule = dflearn.make_rule("dfa", model, x[:1]).double()
    B = list(rule.state_dict()["feedback.B"].split(d))  # the stored B_i, stacked: d rows per block
    assert all(b.shape == (d, V) for b in B)  # one B_i (width x V) shared by every position

    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    dflearn.train_step(model, rule, x, y, opt)
    got = {k: p.grad.clone() for k, p in model.named_parameters()}

    with torch.no_grad():
        logits = model(x)
    e = (torch.softmax(logits, -1) - F.one_hot(y, V).double()) / (N * T)  # (N, T, V)
    b = model.blocks  # [attn, mlp, point] per block
    want = {}

    def grads_of(output, signal, names):
        model.zero_grad(set_to_none=True)
        output.backward(signal)
        params = dict(model.named_parameters())
        want.update({n: params[n].grad.clone() for n in names})

    h0 = b[1](b[0](model.embed(x) + model.position[:T]))  # block 0 includes the embeddings
    grads_of(h0, e @ B[0].t(), [n for n in got if n.startswith(("embed", "position", "blocks.0.", "blocks.1."))])
    h0 = h0.detach()
    h1 = b[4](b[3](h0))
    grads_of(h1, e @ B[1].t(), [n for n in got if n.startswith(("blocks.3.", "blocks.4."))])
    out = model.head(model.norm(h1.detach()))
    grads_of(out, e, [n for n in got if n.startswith(("norm.", "head."))])
    assert set(want) == set(got)
    for name in got:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12, msg=name)


def test_cost_counts_the_gpt_per_position(capsys):
    """`dflearn cost --model gpt`: the example is one window of ids; DFA's feedback is one B_i
    (width x V) per block, shared by the positions."""
    argv = ["cost", "--model", "gpt", "--input-shape", "16", "--num-classes", "11", "-m", "context=16",
            "-m", "layers=2", "-m", "width=16", "--rules", "dfa", "--brief", "--batch-size", "4"]
    assert main(argv) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| dfa"))
    assert [c.strip() for c in row.split("|")][7] == "352"  # fb params: 2 blocks x 16 x 11


@pytest.mark.parametrize("model_name", ["gpt", "vit"])
def test_cost_of_the_transformers_agrees_with_flop_counter(model_name):
    """Attention's two batched products (no weights) are counted: BP's forward and backward MACs
    equal torch's FlopCounterMode / 2, with SDPA run as its math decomposition (bmm), so that the
    reference counts the products itself rather than trusting our Attention.macs."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from dflearn.cost import step_cost

    torch.manual_seed(0)
    text = model_name == "gpt"
    opts = {"layers": 2, "width": 16, "heads": 2, **({"context": 12} if text else {})}
    model = build_model(model_name, (12,) if text else (1, 8, 8), 11 if text else 10, **opts)
    x = torch.randint(0, 11, (3, 12)) if text else torch.randn(3, 1, 8, 8)
    y = torch.randint(0, 11, (3, 12)) if text else torch.randint(0, 10, (3,))
    bp = step_cost(model, "bp", x[:1], 3)
    attention = 2 * 2 * (12 if text else 16) ** 2 * 16  # 2 layers x 2 products x T^2 x width
    assert bp.total.forward > 3 * attention  # the products are in the count...
    with sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as fwd:
            loss = torch.nn.functional.cross_entropy(model(x).flatten(0, -2), y.flatten())
        with FlopCounterMode(display=False) as bwd:
            loss.backward()
    assert fwd.get_total_flops() == 2 * bp.total.forward  # ... exactly as torch counts them
    assert bwd.get_total_flops() == 2 * (bp.total.signal + bp.total.weight_grad)


# PEPITA modulates the input with one error per sample (no positions) and updates one layer per block
REFUSED = {"pepita": "output without positions|one layer per block"}


@pytest.mark.parametrize("model_name", ["gpt", "gpt-sublayer", "vit"])
def test_every_rule_takes_a_step_on_the_transformers(model_name):
    """Direct, learned and sequential rules alike: one step moves every parameter it should
    (Shallow freezes all but the last block and the head), and the loss is finite; PEPITA refuses."""
    from dflearn.rules import RULES

    text = model_name.startswith("gpt")
    shape, classes = ((16,), 11) if text else ((1, 8, 8), 10)
    opts = {"layers": 2, "width": 16, "heads": 2, **({"context": 16} if text else {})}
    x = torch.randint(0, 11, (4, 16)) if text else torch.randn(4, 1, 8, 8)
    y = torch.randint(0, classes, (4, 16) if text else (4,))
    for name in sorted(RULES):
        torch.manual_seed(0)
        model = build_model(model_name, shape, classes, **opts)
        if name in REFUSED:  # a rule that makes no sense here says why in one line
            with pytest.raises(DflearnError, match=REFUSED[name]) as info:
                dflearn.make_rule(name, model, x[:1])
            assert "\n" not in str(info.value)
            continue
        rule = dflearn.make_rule(name, model, x[:1])
        fopt = torch.optim.SGD(rule.parameters(), lr=0.1) if list(rule.parameters()) else None
        before = [p.detach().clone() for p in model.parameters()]
        loss, logits = dflearn.train_step(model, rule, x, y, torch.optim.SGD(model.parameters(), lr=0.1), fopt)
        moved = [not torch.equal(a, b) for a, b in zip(before, model.parameters())]
        assert math.isfinite(loss.item()) and logits.shape == ((4, 16, classes) if text else (4, classes))
        assert all(moved) or (name == "shallow" and any(moved) and not all(moved)), (name, moved)
