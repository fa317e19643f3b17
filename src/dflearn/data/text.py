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
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DflearnError
from .base import data_root, file_digest

TRAIN_FRACTION = 0.9
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


@dataclass
class TextCorpus:
    """Character ids of the train and test text, and the vocabulary that maps them."""

    name: str
    train: torch.Tensor  # int64 (n_train,)
    test: torch.Tensor  # int64 (n_test,)
    vocab: list[str]
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.vocab)

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

    def eval_windows(self, context: int):
        """The test text in non-overlapping windows: (W, context) inputs and targets; the
        rest shorter than a window is left out (at most context characters)."""
        n = (len(self.test) - 1) // context
        if n == 0:
            raise DflearnError(f"{self.name}: the test text is shorter than one window of {context + 1}")
        x = self.test[:n * context].view(n, context)
        y = self.test[1:n * context + 1].view(n, context)
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


def load_tinyshakespeare(root: str | os.PathLike | None = None) -> TextCorpus:
    """Tiny Shakespeare (1,115,394 characters, 65 distinct) from <root>/tinyshakespeare/input.txt,
    its SHA256 checked against the canonical file (karpathy/char-rnn)."""
    folder = data_root(root)
    path = folder / "tinyshakespeare" / "input.txt"
    if not path.exists():
        path = folder / "input.txt"
    if not path.exists():
        raise DflearnError(f"tinyshakespeare not found: put input.txt in {folder / 'tinyshakespeare'} "
                           f"(or set --data-dir / DFLEARN_DATA_DIR)")
    digest = file_digest(path, "sha256")
    if digest != TINYSHAKESPEARE_SHA256:
        raise DflearnError(f"{path}: sha256 checksum mismatch (expected {TINYSHAKESPEARE_SHA256}, got {digest}); "
                           f"the file is corrupt or not the canonical one: fetch it again")
    return corpus_from_text(read_text(path, "tinyshakespeare"), "tinyshakespeare", str(path))
