"""The training loop: a Config in, a run directory out.

A run directory holds `config.json` (the resolved configuration),
`metrics.jsonl` (one row per epoch), `checkpoint.pt` (rewritten atomically after
every epoch: model, feedback state, optimizers, schedulers, RNG states, history)
and, once finished, `summary.json`. `--resume` continues from the checkpoint and
reproduces the uninterrupted run's numbers exactly.

The directory defends itself (see rundir.py): a run holds an exclusive lock on it for its
whole life; the initial state is checkpointed before the first step, so a run interrupted at
any moment can be resumed; every file is replaced atomically and durably. Divergence: the
training loss (every 25 steps and per epoch), the test loss and every parameter and buffer are
checked before anything is written; a value that is not finite or exceeds LOSS_LIMIT stops the
run with the last (finite) checkpoint kept, a summary.json saying where it diverged and a
non-zero exit.
"""
from __future__ import annotations

import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .. import plugins
from ..alignment import diagnostics
from ..data import Batches, load_dataset, make_augment
from ..data.split import has_validation, record, split_validation
from ..data.text import TextBatches, bits, is_text, token_cross_entropy
from ..errors import DflearnError
from ..feedback.step import train_step
from ..models import build_model
from ..rules import make_rule
from . import distributed, transfer
from . import rundir
from .checkpoint import CHECKPOINT, check_keys, load, rng_state, save_atomic, set_rng_state
from .config import Config
from .modes import autocast, compile_model
from .selection import result_line, selection_summary

PAPER_MILESTONES = (0.50, 0.75, 0.89, 0.94)  # (ref) LR x0.25 at these fractions of the epochs
# a loss above this (cross-entropy starts near ln(classes) < 10 nats) or not finite is divergence
LOSS_LIMIT = 1e6


class Diverged(DflearnError):
    """Training diverged; the run directory keeps its last finite checkpoint and says so in summary.json."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DflearnError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DflearnError(f"device '{name}' asked for but CUDA is not available; use --device cpu or auto")
    return device


def make_optimizer(kind: str, params, lr: float, weight_decay: float, momentum: float = 0.9,
                   nesterov: bool = False) -> torch.optim.Optimizer:
    # fused kernels: ~10x faster Adam than the default on CPU (spec/PERFORMANCE.md)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum,
                           nesterov=nesterov and momentum > 0, fused=True)


def make_scheduler(kind: str, optimizer, epochs: int, gamma: float):
    if kind == "paper":
        milestones = sorted({max(1, round(f * epochs)) for f in PAPER_MILESTONES})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.25)
    if kind == "exp":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
    return None


def default_out(config: Config) -> Path:
    from ..experiments.grid import run_name  # the name compare gives the same run

    base = Path("runs") / run_name(config)
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


class Trainer:
    """Builds data, model, rule and optimizers from a Config; `fit()` runs the epochs.

    `Trainer(config, out)` starts a new run in `out`; `Trainer.resume(out)`
    continues one. `model`, `rule`, `optimizer`, `feedback_optimizer`, `data`
    are plain attributes for those who want to look inside or drive steps themselves.

    Under torchrun (or in any initialised process group) it trains data-parallel:
    see `distributed`. Only rank 0 logs and writes the run directory.
    """

    def __init__(self, config: Config, out: str | Path | None = None, *, progress: bool = True,
                 log=print, observers=(), _state: dict | None = None, _lock: rundir.RunLock | None = None):
        config, model, rule = plugins.split_objects(config)  # fit(model=nn.Module, rule=Rule or Rule(...))
        self.config = config = config.resolved()
        if out is not None:
            rundir.check_out(out)
        self.out = Path(out) if out is not None else default_out(config)
        created = not self.out.exists()
        # the writer (rank 0) holds the run directory from now until fit() ends
        self._lock = _lock if _lock is not None or not _writer() else rundir.RunLock(self.out)
        self._fresh = _state is None
        try:
            self._setup(config, model, rule, progress, log, observers, _state)
        except BaseException:
            self.close()
            if created:
                _remove_if_only_lock(self.out)
            raise

    def close(self) -> None:
        """Release the run directory's lock (fit() does it when it ends)."""
        if getattr(self, "_lock", None) is not None:
            self._lock.release()
            self._lock = None

    def _setup(self, config, model, rule, progress, log, observers, _state) -> None:
        torch.set_num_threads(config.threads)
        self.device = distributed.setup(resolve_device(config.device))
        self.rank, self.world = distributed.world()
        self.progress, self.log = progress and self.rank == 0, log if self.rank == 0 else _silent
        if self.rank == 0:  # every line also goes to RUN_DIR/train.log
            self.log = _TextLog(self.log, lambda: self.out / "train.log")
        # optional loggers (e.g. TensorBoard): .alignment(trainer, step, {key: per-point values}),
        # .epoch(trainer, row), .close()
        self.observers = list(observers) if self.rank == 0 else []
        if _state is None and (self.out / "config.json").exists():
            raise DflearnError(f"{self.out} already holds a run; continue it with dflearn train --resume {self.out} "
                               f"or choose another --out")
        torch.manual_seed(config.seed)
        # the validation split: fixed by its own seed, the same for every rule, seed and resume
        self.data = split_validation(load_dataset(config.dataset, config.data_dir, config.download),
                                     config.val_fraction)
        self.model = (model if model is not None else build_model(
            config.model, self.data.input_shape, self.data.num_classes, **config.model_options)).to(self.device)
        self.text = is_text(self.data)  # a character corpus: ids (N, T) in, logits (N, T, V) out
        if self.text and not hasattr(self.model, "context"):
            raise DflearnError(f"model '{config.model}' takes images, not text; use --model gpt for {config.dataset}")
        example = (torch.zeros(1, self.model.context, dtype=torch.long, device=self.device) if self.text
                   else torch.zeros(1, *self.data.input_shape, device=self.device))
        _check_outputs(self.model, example, self.data.num_classes, config.model)
        source = None
        if config.init_from and _state is None:  # before the rule: feedback derived from weights sees these
            source, line = transfer.init_model(self.model, example, config, self.out)
            self.log(line)
        self.rule = (rule if rule is not None else make_rule(
            config.rule, self.model, example, **config.rule_options)).to(self.device)
        if source is not None and config.init_feedback:
            self.log(transfer.init_feedback(self.rule, source, config.init_from))
        self.frozen = transfer.freeze(self.model, example, config.freeze)  # before the optimizers
        if self.frozen:
            self.log(f"frozen (parameters fixed, eval mode): {', '.join(self.frozen)}")
        if config.compile:  # after the rule's probe: compilation happens at the first training step
            compile_model(self.model)
        c = config
        self.optimizer = make_optimizer(c.optimizer, [p for p in self.model.parameters() if p.requires_grad],
                                        c.lr, c.weight_decay,
                                        c.momentum, c.nesterov)
        self.schedulers = [make_scheduler(c.schedule, self.optimizer, c.epochs, c.gamma)]
        self.feedback_optimizer = None
        if self.rule.learns_feedback:
            self.feedback_optimizer = make_optimizer(c.feedback_optimizer, self.rule.parameters(),
                                                     c.feedback_lr, c.feedback_weight_decay, c.momentum, c.nesterov)
            self.schedulers.append(make_scheduler(c.feedback_schedule, self.feedback_optimizer,
                                                  c.epochs, c.feedback_gamma))
        self.generator = torch.Generator().manual_seed(c.seed)
        if self.text:
            if c.augment:
                raise DflearnError(f"--augment {c.augment} transforms images; text data takes none")
            self.train_batches = TextBatches(self.data, "train", c.batch_size, self.model.context,
                                             generator=self.generator, device=self.device, steps=c.max_steps_per_epoch)
            self.test_batches = TextBatches(self.data, "test", 64, self.model.context, device=self.device)
            self.val_batches = (TextBatches(self.data, "val", 64, self.model.context, device=self.device)
                                if has_validation(self.data) else None)
        else:
            self.train_batches = Batches(self.data, "train", c.batch_size, shuffle=True, generator=self.generator,
                                         augment=make_augment(c.augment), device=self.device)
            self.test_batches = Batches(self.data, "test", 1000, device=self.device)
            self.val_batches = (Batches(self.data, "val", 1000, device=self.device)
                                if has_validation(self.data) else None)
        self.epoch, self.step, self.history, self.wall = 0, 0, [], 0.0
        if _state is not None:
            try:
                self._load_state(_state)
            except (KeyError, IndexError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
                raise DflearnError(f"{self.out / CHECKPOINT} does not fit this run's model, rule or optimizers "
                                   f"({type(exc).__name__}: {first}); the checkpoint is damaged or from another "
                                   f"run: start a new run") from None
        distributed.check_batches(c.batch_size, c.batch_size if self.text else len(self.data.x_train))
        distributed.check_identical(self.rule.state_dict(), "feedback matrices",
                                    "every process must draw them from the same --seed")
        distributed.check_identical(self.model.state_dict(), "model weights",
                                    "every process must build the model from the same --seed")

    # ----------------------------------------------------------------- resume
    @classmethod
    def resume(cls, out: str | Path, config: Config | None = None, *, overrides: dict | None = None,
               **kwargs) -> "Trainer":
        """Continue the run in `out`. `config` or `overrides`, if given, must agree with
        the saved configuration except in runtime fields (epochs, device, data location)."""
        rundir.check_out(out)
        out = Path(out)
        if not out.is_dir():
            raise DflearnError(f"{out} holds no run (no such directory); check the path or start a new run")
        lock = kwargs.pop("_lock", None)
        if lock is None and _writer():
            lock = rundir.RunLock(out)  # before reading: nobody else writes it while we resume
        try:
            if not (out / "config.json").is_file():
                raise DflearnError(f"{out} holds no run (no config.json); check the path or start a new run")
            return cls._resume(out, config, overrides, lock, kwargs)
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    @classmethod
    def _resume(cls, out: Path, config, overrides, lock, kwargs) -> "Trainer":
        data = rundir.read_json(out / "config.json", "config.json")
        if not isinstance(data, dict):
            raise DflearnError(f"{out / 'config.json'} does not hold a configuration (a mapping); the run "
                               f"directory is damaged: repair or delete it")
        try:
            saved = Config.from_saved(data)  # fields newer than the run: as the run had them
            saved.resolved()  # types and ranges, as for a new run
        except (DflearnError, TypeError) as exc:
            raise DflearnError(f"{out / 'config.json'}: {exc}; the run directory is damaged: repair or delete it") from None
        summary = out / "summary.json"
        if summary.is_file():
            try:
                done = rundir.read_json(summary, "summary.json")
            except DflearnError:
                done = {}
            if isinstance(done, dict) and done.get("diverged"):
                raise DflearnError(f"{out} diverged at step {done.get('diverged_at_step')}; resuming would repeat "
                                   f"it: {CONTINUE.format(out=out)}")
        wanted = config.resolved() if config is not None else saved
        if overrides:
            wanted = Config.from_dict({**wanted.to_dict(), **overrides}).resolved()
        diff = saved.differences(wanted)
        if diff:
            shown = ", ".join(f"{k}: {getattr(saved, k)!r} in the run vs {getattr(wanted, k)!r} asked" for k in diff)
            raise DflearnError(f"{out} was run with another configuration ({shown}); resume with the "
                               f"run's own options or start a new run with another --out")
        for k in Config.RUNTIME:
            setattr(saved, k, getattr(wanted, k))
        state = load(out / CHECKPOINT)
        check_keys(state, out / CHECKPOINT)
        try:
            other = Config.from_saved(state["config"]).differences(saved)
        except (DflearnError, TypeError, AttributeError):
            other = True
        if other:
            raise DflearnError(f"{out / CHECKPOINT} belongs to another configuration than {out / 'config.json'}; "
                               f"the run directory is inconsistent, start a new run")
        done = state["epoch"]
        if isinstance(done, int) and saved.epochs < done:
            raise DflearnError(f"{out} has already trained {done} epochs; --epochs {saved.epochs} would rewrite its "
                               f"history: resume with --epochs {done} or more, or read {out / 'summary.json'}")
        return cls(saved, out, _state=state, _lock=lock, **kwargs)

    def state_dict(self) -> dict:
        return {
            "config": self.config.to_dict(), "epoch": self.epoch, "step": self.step,
            "history": self.history, "wall": self.wall,
            "model": self.model.state_dict(), "rule": self.rule.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "feedback_optimizer": self.feedback_optimizer.state_dict() if self.feedback_optimizer else None,
            "schedulers": [s.state_dict() if s else None for s in self.schedulers],
            "rng": rng_state(self.generator),
        }

    def _load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.rule.load_state_dict(state["rule"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.feedback_optimizer is not None:
            self.feedback_optimizer.load_state_dict(state["feedback_optimizer"])
        for s, sd in zip(self.schedulers, state["schedulers"]):
            if s is not None:
                s.load_state_dict(sd)
        set_rng_state(state["rng"], self.generator)
        self.epoch, self.step, self.history, self.wall = state["epoch"], state["step"], state["history"], state["wall"]

    # --------------------------------------------------------------- training
    def fit(self) -> dict:
        """Train until `config.epochs`, writing the run directory; returns the summary.

        Raises `Diverged` (a DflearnError) if the run diverged: see the module's docstring."""
        if self.rank == 0 and self._lock is None:
            self._lock = rundir.RunLock(self.out)
        try:
            return self._fit()
        finally:
            self.close()

    def _fit(self) -> dict:
        c, main = self.config, self.rank == 0
        keep = f"free space or fix the folder, then continue with dflearn train --resume {self.out}"
        if main:
            if self._fresh:  # the initial state first: from here on the run can always be resumed
                save_atomic(self.state_dict(), self.out / CHECKPOINT, keep)
                self._fresh = False
            rundir.write_json(self.out / "config.json", c.to_dict(), keep=keep)
            # drops rows of an epoch that never checkpointed
            rundir.write_lines(self.out / "metrics.jsonl", self.history, keep=keep)
            rundir.STARTED.append(self.out)
        if self.epoch == 0:
            procs = f" x {self.world} processes" if self.world > 1 else ""
            val = f"{len(self.data.x_val)} val / " if self.data.x_val is not None else ""
            self.log(f"dflearn: {c.rule} on {c.dataset} ({len(self.data.x_train)} train / {val}"
                     f"{len(self.data.x_test)} test), model {c.model}, {c.epochs} epochs, device {self.device}{procs}")
        elif self.epoch < c.epochs:
            self.log(f"dflearn: resuming {self.out} at epoch {self.epoch + 1} of {c.epochs}")
        while self.epoch < c.epochs:
            start = time.perf_counter()
            row = self.train_epoch()
            row.update(self.evaluate())
            self._check_epoch(row)  # before anything of this epoch is written
            row = rundir.finite_or_none(row)
            row["eval_seconds"] = round(time.perf_counter() - start - row["seconds"], 4)
            self.epoch += 1
            self.wall += time.perf_counter() - start
            self.history.append(row)
            if main:
                # checkpoint first: metrics.jsonl never holds an epoch the checkpoint lacks
                save_atomic(self.state_dict(), self.out / CHECKPOINT, keep)
                rundir.write_lines(self.out / "metrics.jsonl", self.history, keep=keep)
                if _improved(self.history, "val_acc"):  # best by validation (never by test), beside the last:
                    # the state just saved, so a hard link to it (half the disk and the writing) where
                    # the file system has them
                    if not rundir.link_atomic(self.out / CHECKPOINT, self.out / BEST):
                        save_atomic(self.state_dict(), self.out / BEST, keep)
            self.log(self._epoch_line(row))
            for o in self.observers:
                o.epoch(self, row)
        for o in self.observers:
            o.close()
        summary = self.summary()
        if main:
            rundir.write_json(self.out / "summary.json", rundir.finite_or_none(summary), keep=keep)
        self.log(f"{c.rule} · {c.model} · {c.dataset}: {result_line(summary)}, "
                 f"{summary['wall_seconds']:.1f} s; run saved in {self.out}")
        return summary

    def train_epoch(self) -> dict:
        c, epoch = self.config, self.epoch + 1
        self.model.train()
        transfer.hold_frozen(self.model, self.frozen)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen, aligns, align_steps = 0, [], []
        start = time.perf_counter()
        bar = tqdm(self.train_batches, desc=f"epoch {epoch}/{c.epochs}", leave=False,
                   disable=not self.progress or None, file=sys.stderr, dynamic_ncols=True)
        for i, (x, y) in enumerate(bar):
            if c.max_steps_per_epoch and i == c.max_steps_per_epoch:
                break
            x, y, share = distributed.local_batch(x, y)
            if c.align_every and self.step % c.align_every == 0:
                aligns.append(diagnostics(self.model, self.rule, x, y, feedback_optimizer=self.feedback_optimizer,
                                          per=c.align_measure))
                align_steps.append(self.step)
                for o in self.observers:
                    o.alignment(self, self.step, aligns[-1])
            with autocast(c.precision, self.device):
                loss, logits = train_step(self.model, self.rule, x, y, self.optimizer, self.feedback_optimizer,
                                          sync=distributed.gradient_sync(share))
            loss_sum += loss * y.numel()  # per token for text: the loss is the mean over N x T
            correct += (logits.argmax(-1) == y).sum()
            seen += y.numel()
            self.step += 1
            if i % 25 == 0:  # the only host synchronisation in the loop
                # the global loss, so that all processes stop together
                (global_loss,) = distributed.sum_over_processes(loss * share)
                self._check_finite(global_loss.item(), epoch, i)
                bar.set_postfix(loss=f"{global_loss.item():.4f}", refresh=False)
        seconds = time.perf_counter() - start
        distributed.broadcast_buffers(self.model)
        loss_sum, correct, seen = distributed.sum_over_processes(loss_sum, correct,
                                                                 torch.tensor(seen, device=self.device))
        seen = int(seen)
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this epoch trained at
        for s in self.schedulers:
            if s is not None:
                s.step()
        row = {"epoch": epoch, "train_loss": loss_sum.item() / seen, "train_acc": correct.item() / seen,
               "seconds": round(seconds, 4), "lr": lr, "step": self.step}
        self._check_finite(row["train_loss"], epoch, len(self.train_batches) - 1)
        if aligns:  # epoch means per point of each diagnostic ('alignment': the signal's; 'alignment_std':
            # the mean over measurements of the spread over one batch's samples)
            for key in aligns[0]:
                row[key] = [_nanmean(col) for col in zip(*(a[key] for a in aligns))]
            row["alignment_points"] = [p.name for p in self.rule.layout.points]
            row["alignment_measurements"] = len(aligns)
            # each measurement with its global step, for plots drawn per measurement (None: undefined)
            row["alignment_trace"] = [{"step": s, **{k: [None if v is None or v != v else v for v in a[k]] for k in a}}
                                      for s, a in zip(align_steps, aligns)]
        return row

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Loss and accuracy on the validation split (if any) and the test split."""
        out = self._evaluate(self.val_batches, "val") if self.val_batches is not None else {}
        out.update(self._evaluate(self.test_batches, "test"))
        return out

    @torch.no_grad()
    def _evaluate(self, batches: Batches, split: str) -> dict:
        self.model.eval()
        loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for x, y in batches:
            x, y, _ = distributed.local_batch(x, y)  # sharded, then summed over processes
            with autocast(self.config.precision, self.device):
                logits = self.model(x)
            loss += token_cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(-1) == y).sum()
        loss, correct = distributed.sum_over_processes(loss, correct)
        n = batches.y.numel()  # text: characters predicted (loss in nats per token)
        row = {f"{split}_loss": loss.item() / n, f"{split}_acc": int(correct) / n}
        if self.text:
            row[f"{split}_bpc"] = bits(row[f"{split}_loss"])
        return row

    def summary(self) -> dict:
        c, h = self.config, self.history
        return {
            "rule": c.rule, "model": c.model, "dataset": c.dataset, "epochs": c.epochs, "seed": c.seed,
            **selection_summary(h),  # test at the validation-best epoch, final, best over epochs (paper)
            "val_size": record(self.data, c.val_fraction)[0], "val_split": record(self.data, c.val_fraction)[1],
            "final_train_loss": h[-1]["train_loss"],
            "final_test_loss": h[-1]["test_loss"],
            **({"final_test_bpc": h[-1]["test_bpc"], "best_test_bpc": min(r["test_bpc"] for r in h),
                "train_bpc": bits(h[-1]["train_loss"]), "vocab_size": len(self.data.vocab)} if self.text else {}),
            "wall_seconds": round(self.wall, 3),
            "seconds_per_epoch": round(statistics.median(r["seconds"] for r in h), 4),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "feedback_parameters": sum(t.numel() for t in self.rule.state_dict().values()),
            "device": str(self.device), "processes": self.world, "torch": torch.__version__, "out": str(self.out),
        }

    # ---------------------------------------------------------------- helpers
    def _check_finite(self, value: float, epoch: int, step: int, what: str = "training loss") -> None:
        if math.isfinite(value) and abs(value) <= LOSS_LIMIT:
            return
        self._diverged(f"{what} {value:.3g}", epoch)

    def _check_epoch(self, row: dict) -> None:
        """The epoch's losses and every parameter and buffer: finite and within LOSS_LIMIT."""
        epoch = self.epoch + 1
        for key in ("train_loss", "val_loss", "test_loss"):
            if key in row:
                self._check_finite(row[key], epoch, self.step, key.replace("_", " "))
        for owner, module in (("model", self.model), ("rule", self.rule)):
            tensors = [t for t in module.state_dict().values() if torch.is_tensor(t) and t.is_floating_point()]
            if tensors:
                bad = ~torch.stack([t.detach().isfinite().all() for t in tensors])
                if bool(bad.any()):
                    name = [k for k, t in module.state_dict().items()
                            if torch.is_tensor(t) and t.is_floating_point()][int(bad.nonzero()[0])]
                    self._diverged(f"{owner} parameter '{name}' not finite", epoch)

    def _diverged(self, what: str, epoch: int) -> None:
        """Record the divergence in summary.json (the checkpoint keeps the last finite epoch) and stop."""
        c = self.config
        kept = (f"the last checkpoint (epoch {self.epoch}, finite) is kept" if self.epoch
                else "the checkpoint keeps the initial state")
        summary = {"rule": c.rule, "model": c.model, "dataset": c.dataset, "epochs": c.epochs, "seed": c.seed,
                   "diverged": True, "diverged_at_step": self.step, "diverged_in_epoch": epoch, "cause": what,
                   "epochs_done": self.epoch, "loss_limit": LOSS_LIMIT, "out": str(self.out)}
        if self.rank == 0:
            rundir.write_json(self.out / "summary.json", rundir.finite_or_none(summary))
        raise Diverged(f"training diverged at step {self.step} (epoch {epoch}): {what}; {kept} in {self.out}; "
                       + (CONTINUE if self.epoch else CONTINUE_NEW).format(out=self.out))

    def _epoch_line(self, r: dict) -> str:
        line = (f"epoch {r['epoch']:>3}/{self.config.epochs}  train loss {r['train_loss']:.4f}  "
                f"train acc {r['train_acc']:.2%}  " + (f"val acc {r['val_acc']:.2%}  " if "val_acc" in r else "")
                + f"test acc {r['test_acc']:.2%}  {r['seconds']:.1f}s")
        if "test_bpc" in r:
            line += f"  test loss {r['test_loss']:.4f} nats/char ({r['test_bpc']:.3f} bpc)"
        if "alignment" in r:
            line += "  alignment " + " ".join("—" if v is None else f"{v:.3f}" for v in r["alignment"])
        return line


def _silent(*args, **kwargs) -> None:
    pass


CONTINUE_NEW = "start a new run with a smaller --lr"
CONTINUE = ("start a new run with a smaller --lr (or, to keep the finished epochs, --init-from "
            "{out}/checkpoint.pt with a smaller --lr)")


def _writer() -> bool:
    """Whether this process writes run directories: rank 0 (set by torchrun before the group exists)."""
    return int(os.environ.get("RANK", "0")) == 0


def _remove_if_only_lock(out: Path) -> None:
    """Remove a run directory this process created if nothing but its lock file was written."""
    try:
        if [p.name for p in out.iterdir()] in ([], [rundir.LOCK]):
            (out / rundir.LOCK).unlink(missing_ok=True)
            out.rmdir()
    except OSError:
        pass


def _check_outputs(model: torch.nn.Module, example: torch.Tensor, classes: int, name: str) -> None:
    """The model gives one output per class (else the first batch fails or trains silently wrong)."""
    was = model.training
    model.eval()  # no batch statistics updated, no dropout draw: the run's numbers are unchanged
    try:
        with torch.no_grad():
            out = model(example)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise DflearnError(f"model '{name}' fails on one input of the data set's shape "
                           f"{tuple(example.shape[1:])} ({type(exc).__name__}: {first}); choose a model for "
                           f"this data set") from None
    finally:
        model.train(was)
    if not torch.is_tensor(out) or out.dim() < 2 or out.shape[-1] != classes:  # (N, classes), or (N, T, vocab)
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise DflearnError(f"model '{name}' gives outputs of shape {shape} for one input, but the data set has "
                           f"{classes} classes; give the model {classes} outputs")


BEST = "best.pt"


def _improved(history: list[dict], key: str) -> bool:
    """The last row has `key` and beats every earlier row's (strictly: the first best epoch is kept)."""
    if key not in history[-1]:
        return False
    return all(history[-1][key] > r[key] for r in history[:-1] if key in r)


class _TextLog:
    """`log` that also appends each line, timestamped, to a text file (once its folder exists)."""

    def __init__(self, log, path):
        self.inner, self.path, self.pending = log, path, []

    def __call__(self, *parts, **kwargs) -> None:
        self.inner(*parts, **kwargs)
        self.pending.append(time.strftime("%Y-%m-%d %H:%M:%S ") + " ".join(map(str, parts)) + "\n")
        path = self.path()
        if path.parent.is_dir():  # lines logged before the folder existed are written with the first after
            try:  # a convenience copy, never through a planted link; the run's real writes report a full disk
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
                with os.fdopen(fd, "a") as f:
                    f.writelines(self.pending)
            except OSError:
                pass
            self.pending = []


def _nanmean(values) -> float | None:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None


def fit(config: Config | None = None, *, out: str | Path | None = None, resume: str | Path | None = None,
        progress: bool = True, log=print, observers=(), **options) -> dict:
    """Train a model under a rule and return the run's summary.

    `fit(rule="las", dataset="mnist", epochs=2)` or `fit(Config(...), out="runs/x")`;
    `fit(resume="runs/x")` continues an interrupted run.
    """
    if resume is not None:
        return Trainer.resume(resume, config, overrides=options, progress=progress, log=log,
                              observers=observers).fit()
    config = Config.from_dict({**(config or Config()).to_dict(), **options})
    return Trainer(config, out, progress=progress, log=log, observers=observers).fit()
