"""Model selection on validation, and the three accuracies a run reports.

A run's `summary.json` names each figure by how it was chosen:

- `test_accuracy_at_val_best`: the test accuracy of the epoch with the highest
  validation accuracy (the first such epoch on ties), `val_best_epoch` that epoch,
  `val_best_accuracy` its validation accuracy. The honest number: nothing about
  the test split was used to choose it. None when the run has no validation split.
- `final_test_accuracy`: the last epoch's.
- `best_test_accuracy_paper_protocol`: the best test accuracy over epochs, the
  LAS paper's protocol (selection on the test set; optimistic). `best_test_accuracy`
  and `best_epoch` are the same figure under its old name, kept for old readers.
"""
from __future__ import annotations

from ..errors import DflearnError


def val_best(history: list[dict]) -> dict | None:
    """The row with the highest `val_acc`, the first on ties; None without validation."""
    rows = [r for r in history if r.get("val_acc") is not None]
    if not rows:
        return None
    best = rows[0]
    for r in rows[1:]:
        if r["val_acc"] > best["val_acc"]:  # strictly: the first best epoch is kept
            best = r
    return best


def selection_summary(history: list[dict]) -> dict:
    """The summary's selection keys for a run's epoch rows (see the module docstring)."""
    if not history:
        raise DflearnError("no epoch finished, so there is nothing to summarise")
    best_test = max(history, key=lambda r: r["test_acc"])  # max keeps the first on ties
    chosen = val_best(history)
    return {
        "selection": "validation" if chosen else "none (no validation split)",
        "test_accuracy_at_val_best": chosen["test_acc"] if chosen else None,
        "val_best_epoch": chosen["epoch"] if chosen else None,
        "val_best_accuracy": chosen["val_acc"] if chosen else None,
        "final_test_accuracy": history[-1]["test_acc"],
        "final_val_accuracy": history[-1].get("val_acc"),
        "best_test_accuracy_paper_protocol": best_test["test_acc"],
        "best_test_accuracy": best_test["test_acc"],  # old name of the paper protocol's figure
        "best_epoch": best_test["epoch"],
    }


def result_line(summary: dict) -> str:
    """'test accuracy 97.2% at the validation-best epoch 7 (final 97.0%, best over epochs 97.5%)'."""
    final, best = summary["final_test_accuracy"], summary["best_test_accuracy_paper_protocol"]
    if summary.get("test_accuracy_at_val_best") is not None:
        return (f"test accuracy {summary['test_accuracy_at_val_best']:.2%} at the validation-best epoch "
                f"{summary['val_best_epoch']} (final {final:.2%}; best over epochs {best:.2%}, "
                f"the paper protocol, at epoch {summary['best_epoch']})")
    return f"test accuracy {final:.2%} (best {best:.2%} at epoch {summary['best_epoch']}; no validation split)"
