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
