"""Checkpoints load with weights_only=True: a file with a code payload is refused."""
import json

import pytest
import torch

from dflearn import Config, DflearnError
from dflearn.training import Trainer
from dflearn.training.checkpoint import CHECKPOINT, load


def _touch(path):
    open(path, "w").close()


class Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):  # unpickling this calls _touch(path): it would run code
        return (_touch, (self.path,))


def test_our_checkpoints_load_and_payloads_are_refused(tmp_path):
    run = tmp_path / "run"
    Trainer(Config(rule="dfa", model_options={"widths": [16]}, epochs=1), run, progress=False,
            log=lambda *a: None).fit()
    state = torch.load(run / CHECKPOINT, weights_only=True)  # ours: plain torch, no code allowed
    assert state["config"] == json.loads((run / "config.json").read_text())
    marker = tmp_path / "ran"
    torch.save({**state, "model": Payload(str(marker))}, run / CHECKPOINT)
    for attempt in (lambda: load(run / CHECKPOINT), lambda: Trainer.resume(run, overrides={"epochs": 2})):
        with pytest.raises(DflearnError) as info:
            attempt()
        message = str(info.value)
        assert "refused to load" in message and "could run code" in message and "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("links", [True, False])
def test_best_pt_holds_the_validation_best_epoch_linked_or_written(tmp_path, monkeypatch, links):
    import os

    from dflearn.training import trainer

    monkeypatch.setattr(trainer, "_improved", lambda history, key: len(history) in (1, 2))  # best: epoch 2
    if not links:  # a file system without hard links: best.pt is written out instead
        def no_link(*a, **k):
            raise OSError(1, "Operation not permitted")
        monkeypatch.setattr(os, "link", no_link)
    run = tmp_path / "run"
    kw = dict(rule="dfa", model_options={"widths": [16]}, max_steps_per_epoch=3)
    Trainer(Config(**kw, epochs=2), run, progress=False, log=lambda *a: None).fit()
    assert os.path.samefile(run / "best.pt", run / CHECKPOINT) == links  # epoch 2 is the best and the last
    second = load(run / CHECKPOINT)
    Trainer.resume(run, overrides={"epochs": 3}, progress=False, log=lambda *a: None).fit()
    best, last = load(run / "best.pt"), load(run / CHECKPOINT)
    assert best["epoch"] == 2 and last["epoch"] == 3  # the link survived the next checkpoint's rename
    assert all(torch.equal(best["model"][k], second["model"][k]) for k in second["model"])
    assert not all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    assert not os.path.samefile(run / "best.pt", run / CHECKPOINT) and not list(run.glob(".*.tmp"))
