"""Character-level text corpora: Tiny Shakespeare and any UTF-8 `.txt`.

A corpus is held whole as one int64 tensor of character ids. The vocabulary is
the sorted set of characters of the *training* text; a character of the test text
outside it is refused (one line naming it) rather than mapped to a reserved token,
so that bits per character always mean the same thing. The split is the usual one
for Tiny Shakespeare: the first 90% of the characters train, the last 10% test.

Training batches are random windows of `context + 1` characters (inputs are the
first `context`, targets the next character at each position), their starts drawn
from the caller's generator, so a run's batch order is fixed by its seed and
resumes exactly. Evaluation covers the test text in non-overlapping windows.

As data sets of the registry: `tinyshakespeare`, and `text:PATH` for any UTF-8 file
(`--dataset text:corpus.txt`). `TextBatches` stands in for `Batches`: an epoch is
`len(train) // (batch_size * context)` random windows (about one pass over the
training characters), the test split is every evaluation window in order. The
window length is the model's `context` (the GPT's option), not the data set's.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import DflearnError
from .base import data_root, download as fetch, file_digest, register_dataset

TRAIN_FRACTION = 0.9
DEFAULT_CONTEXT = 128
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINYSHAKESPEARE_URLS = ["https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"]


@dataclass
class TextCorpus:
    """Character ids of the train and test text, and the vocabulary that maps them."""

    name: str
    train: torch.Tensor  # int64 (n_train,)
    test: torch.Tensor  # int64 (n_test,)
    vocab: list[str]
    source: str = ""
    val: torch.Tensor | None = None  # the validation text, cut from the end of the training text (data/split.py)

    @property
    def num_classes(self) -> int:
        return len(self.vocab)

    # what the trainer and `dflearn datasets` read of any data set
    @property
    def x_train(self) -> torch.Tensor:
        return self.train

    @property
    def x_test(self) -> torch.Tensor:
        return self.test

    @property
    def x_val(self) -> torch.Tensor | None:
        return self.val

    @property
    def input_shape(self) -> tuple[int]:
        """One sequence dimension; its length is the model's context (128 is the GPT's default)."""
        return (DEFAULT_CONTEXT,)

    def encode(self, text: str) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.vocab)}
        unknown = sorted({c for c in text if c not in index})
        if unknown:
            raise DflearnError(f"{self.name}: character(s) {''.join(unknown)!r} are not in the training "
                               f"text's vocabulary of {len(self.vocab)}; use only characters it contains")
        return torch.tensor([index[c] for c in text], dtype=torch.long)

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def windows(self, batch_size: int, context: int, generator: torch.Generator):
        """One training batch: inputs (N, context) and next-character targets (N, context)."""
        if len(self.train) <= context:
            raise DflearnError(f"{self.name}: the training text ({len(self.train)} characters) is "
                               f"shorter than a window of {context + 1}; use a smaller context")
        starts = torch.randint(0, len(self.train) - context, (batch_size,), generator=generator)
        rows = self.train[starts[:, None] + torch.arange(context + 1)]
        return rows[:, :-1], rows[:, 1:]

    def eval_windows(self, context: int, split: str = "test"):
        """The test (or validation) text in non-overlapping windows: (W, context) inputs and
        targets; the rest shorter than a window is left out (at most context characters)."""
        text = getattr(self, split)
        n = (len(text) - 1) // context
        if n == 0:
            raise DflearnError(f"{self.name}: the {split} text is shorter than one window of {context + 1}")
        x = text[:n * context].view(n, context)
        y = text[1:n * context + 1].view(n, context)
        return x, y


def read_text(path: Path, name: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DflearnError(f"{name}: {path} not found; name an existing UTF-8 .txt file") from None
    except IsADirectoryError:
        raise DflearnError(f"{name}: {path} is a folder; name a UTF-8 .txt file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DflearnError(f"{name}: {path} is not UTF-8 text (byte {exc.start} cannot be decoded); "
                           f"convert it to UTF-8") from None
    if len(text) < 2:
        raise DflearnError(f"{name}: {path} holds {len(text)} characters; a corpus needs text to train on")
    return text


def corpus_from_text(text: str, name: str, source: str = "") -> TextCorpus:
    cut = int(len(text) * TRAIN_FRACTION)
    train_text, test_text = text[:cut], text[cut:]
    vocab = sorted(set(train_text))
    corpus = TextCorpus(name, torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), vocab, source)
    corpus.train = corpus.encode(train_text)
    corpus.test = corpus.encode(test_text)
    return corpus


def load_text(path: str | os.PathLike) -> TextCorpus:
    """Any UTF-8 text file: first 90% train, last 10% test, vocabulary from the training part."""
    path = Path(path).expanduser()
    return corpus_from_text(read_text(path, "text"), "text", str(path))


def load_tinyshakespeare(root: str | os.PathLike | None = None, download: bool = False) -> TextCorpus:
    """Tiny Shakespeare (1,115,394 characters, 65 distinct) from <root>/tinyshakespeare/input.txt,
    its SHA256 checked against the canonical file (karpathy/char-rnn); `download` fetches it there."""
    folder = data_root(root)
    path = folder / "tinyshakespeare" / "input.txt"
    if not path.exists() and (folder / "input.txt").exists():
        path = folder / "input.txt"
    if not path.exists() and download:
        fetch(TINYSHAKESPEARE_URLS, path, md5=None)  # the SHA256 below decides
    if not path.exists():
        raise DflearnError(f"tinyshakespeare not found: put input.txt in {folder / 'tinyshakespeare'} "
                           f"(or set --data-dir / DFLEARN_DATA_DIR), or add --download")
    digest = file_digest(path, "sha256")
    if digest != TINYSHAKESPEARE_SHA256:
        raise DflearnError(f"{path}: sha256 checksum mismatch (expected {TINYSHAKESPEARE_SHA256}, got {digest}); "
                           f"the file is corrupt or not the canonical one: fetch it again")
    return corpus_from_text(read_text(path, "tinyshakespeare"), "tinyshakespeare", str(path))


def is_text(data) -> bool:
    return isinstance(data, TextCorpus)


class TextBatches:
    """`Batches` for a corpus: (ids, next ids) pairs of shape (N, context), int64, on `device`.

    train: `len(self)` batches of random windows drawn from `generator` as they are taken
    (`steps`, if given, caps that number so no window is drawn past the cap); test: the
    evaluation windows in order, `batch_size` windows at a time.
    """

    def __init__(self, corpus: TextCorpus, split: str, batch_size: int, context: int, *,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                 steps: int = 0):
        self.corpus, self.split, self.batch_size, self.context = corpus, split, batch_size, context
        self.generator, self.device = generator, device
        if split == "train":
            corpus.windows(1, context, torch.Generator())  # a context longer than the text fails now
            self.steps = max(1, len(corpus.train) // (batch_size * context))
            if steps:
                self.steps = min(self.steps, steps)
        else:
            self.x, self.y = (t.to(device) for t in corpus.eval_windows(context, split))
            self.steps = -(-len(self.x) // batch_size)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for i in range(self.steps):
            if self.split == "train":
                x, y = self.corpus.windows(self.batch_size, self.context, self.generator)
                yield x.to(self.device), y.to(self.device)
            else:
                yield self.x[i * self.batch_size:(i + 1) * self.batch_size], self.y[i * self.batch_size:(i + 1) * self.batch_size]


def token_cross_entropy(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of (N, *S, V) logits against (N, *S) ids: the mean (or sum) over every
    position, in nats per token; (N, V) against (N,) is the ordinary classifier loss."""
    return F.cross_entropy(logits.flatten(0, -2), target.flatten(), reduction=reduction)


def bits(nats: float) -> float:
    """Nats per character in bits per character."""
    return nats / math.log(2)


@register_dataset("tinyshakespeare")
def _tinyshakespeare(root: Path, download: bool = False) -> TextCorpus:
    """Tiny Shakespeare, character level (1,115,394 characters, 65 distinct; 90/10 split)."""
    return load_tinyshakespeare(root, download)


@register_dataset("text")
def _text(root: Path, download: bool = False) -> TextCorpus:
    """Any UTF-8 text file, character level, as --dataset text:PATH (90/10 split)."""
    raise DflearnError("the text data set needs a file: --dataset text:PATH (a UTF-8 .txt)")
