"""Character-level text data and the GPT: loader, splits, windows, causality, learning under BP."""
import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from dflearn.data.text import corpus_from_text, load_text, load_tinyshakespeare
from dflearn.errors import DflearnError
from dflearn.feedback.point import FeedbackPoint
from dflearn.models.gpt import GPT


@pytest.fixture
def shakespeare(data_dir):
    if not (data_dir / "tinyshakespeare" / "input.txt").exists():
        pytest.skip("tinyshakespeare not in the data folder")
    return load_tinyshakespeare(data_dir)


def test_tinyshakespeare_vocabulary_and_split(shakespeare, data_dir):
    text = (data_dir / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    assert len(text) == 1_115_394
    assert len(shakespeare.train) == 1_003_854 and len(shakespeare.test) == 111_540  # 90% / 10%
    assert shakespeare.vocab == sorted(set(text[:1_003_854]))
    assert shakespeare.decode(shakespeare.train[:20]) == text[:20]
    assert shakespeare.decode(shakespeare.test[-20:]) == text[-20:]


def test_checksum_is_checked(tmp_path, data_dir):
    source = data_dir / "tinyshakespeare" / "input.txt"
    if not source.exists():
        pytest.skip("tinyshakespeare not in the data folder")
    (tmp_path / "tinyshakespeare").mkdir()
    raw = bytearray(source.read_bytes())
    raw[1000] = ord("#") if raw[1000] != ord("#") else ord("%")
    (tmp_path / "tinyshakespeare" / "input.txt").write_bytes(bytes(raw))
    with pytest.raises(DflearnError, match="sha256 checksum mismatch"):
        load_tinyshakespeare(tmp_path)


def test_windows_are_reproducible_and_shifted_by_one():
    corpus = corpus_from_text("abcdefghij" * 50, "t")
    a = corpus.windows(8, 16, torch.Generator().manual_seed(3))
    b = corpus.windows(8, 16, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    x, y = a
    assert x.shape == y.shape == (8, 16)
    assert torch.equal(x[:, 1:], y[:, :-1])  # the target is the next character
    ex, ey = corpus.eval_windows(16)
    assert ex.shape[1] == 16 and len(ex) == (len(corpus.test) - 1) // 16
    assert torch.equal(ex.flatten(), corpus.test[:ex.numel()])  # non-overlapping, in order
    assert torch.equal(ey.flatten(), corpus.test[1:ex.numel() + 1])


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe\x00bad bytes", "is not UTF-8 text"),
    (b"", "holds 0 characters"),
])
def test_bad_text_files_are_one_line(tmp_path, content, message):
    path = tmp_path / "t.txt"
    path.write_bytes(content)
    with pytest.raises(DflearnError, match=message) as info:
        load_text(path)
    assert "\n" not in str(info.value)


def test_unknown_character_in_test_text_is_refused():
    with pytest.raises(DflearnError, match="not in the training text's vocabulary"):
        corpus_from_text("a" * 90 + "b" * 10, "t")  # 'b' appears only in the last 10%


def test_gpt_is_causal():
    torch.manual_seed(0)
    model = GPT(vocab=11, context=12, layers=2, width=16, heads=2).eval()
    ids = torch.randint(0, 11, (3, 12))
    changed = ids.clone()
    t = 5
    changed[:, t + 1:] = (changed[:, t + 1:] + 1) % 11
    a, b = model(ids), model(changed)
    assert a.shape == (3, 12, 11)
    torch.testing.assert_close(a[:, :t + 1], b[:, :t + 1], rtol=0, atol=1e-6)
    assert (a[:, t + 1:] - b[:, t + 1:]).abs().max() > 1e-3


@pytest.mark.parametrize("points, count", [("block", 3), ("sublayer", 6)])
def test_gpt_feedback_points(points, count):
    model = GPT(vocab=7, context=8, layers=3, width=8, heads=2, points=points)
    assert sum(isinstance(m, FeedbackPoint) for m in model.modules()) == count


def test_gpt_learns_tinyshakespeare_below_unigram_entropy(shakespeare):
    """BP with Adam, 300 steps of a tiny GPT: the test loss falls clearly below the unigram
    entropy of the text (what a model that ignores context can reach)."""
    counts = Counter(shakespeare.train.tolist())
    total = sum(counts.values())
    unigram = -sum(c / total * math.log(c / total) for c in counts.values())  # nats, about 3.3
    torch.manual_seed(0)
    model = GPT(shakespeare.num_classes, context=32, layers=2, width=64, heads=4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        x, y = shakespeare.windows(32, 32, gen)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y = shakespeare.eval_windows(32)
    with torch.no_grad():
        test_loss = F.cross_entropy(model(x[:400]).flatten(0, 1), y[:400].flatten()).item()
    print(f"test loss {test_loss:.3f} nats vs unigram entropy {unigram:.3f}")
    assert test_loss < unigram - 0.6, (test_loss, unigram)
