"""Data-parallel training on torch.distributed (gloo on CPU, NCCL on CUDA).

Every process holds the whole model and the rule's feedback state. All draw the
same global batch (same seed, same data order, same augmentation draws) and each
trains on its contiguous slice of it. Gradients are summed over processes, each
weighted by its slice's share of the global batch, before every optimizer step.

Why the weights: the engine's error e = dLoss/dlogits carries 1/n_r for a slice of
n_r samples (mean loss), so every gradient on process r — model, LAS/LTAS local
modules, DKP's B — is (1/n_r) sum over its slice. Summing (n_r/N) times that over
the processes gives (1/N) sum over the global batch: exactly the one-process
gradient, also when N does not divide evenly (then plain averaging would not).

No DistributedDataParallel wrapper: the rule's own parameters live outside the
model, the step runs a backward from several roots, and the wrapper would change
the model's state_dict keys. One flat all-reduce per optimizer step does it.
"""
from __future__ import annotations

import contextlib
import os
import signal
from typing import Callable

import torch
import torch.distributed as dist

from ..errors import DflearnError


def world() -> tuple[int, int]:
    """(rank, number of processes); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def setup(device: torch.device) -> torch.device:
    """Join the process group torchrun describes in the environment, if any (NCCL for
    CUDA, gloo otherwise), and return the device this process trains on: under CUDA,
    process k of a node takes cuda:k (LOCAL_RANK)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        die_with_parent()
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, size = world()
    if size == 1 or device.type != "cuda":
        return device
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device.index is not None and device.index != local:
        raise DflearnError(f"--device {device} would put all {size} processes on one GPU; "
                           f"use --device cuda (process k takes cuda:k)")
    device = torch.device("cuda", local)
    torch.cuda.set_device(device)
    return device


def die_with_parent() -> None:
    """In a worker started by `launch` (DFLEARN_LAUNCHER_PID set): end when the launcher ends, however
    it ends (Linux PR_SET_PDEATHSIG), so that no worker goes on writing a run directory alone."""
    launcher = os.environ.get("DFLEARN_LAUNCHER_PID")
    if not launcher:
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher died before the line above: it will never signal us
        os.kill(os.getpid(), signal.SIGTERM)


PEER_WORDS = ("connection", "closed", "peer", "gloo", "nccl", "timed out", "timeout", "broken pipe", "reset by")


@contextlib.contextmanager
def peer_errors():
    """Under several processes, a peer that died makes the survivors' next collective fail with a long
    backend traceback: turn it into one line."""
    try:
        yield
    except DflearnError:
        raise
    except RuntimeError as exc:  # DistBackendError and gloo's errors are RuntimeErrors
        rank, size = world()
        text = str(exc).strip()
        if size == 1 and not isinstance(exc, getattr(dist, "DistError", ())):
            raise
        if not isinstance(exc, getattr(dist, "DistError", ())) and not any(w in text.lower() for w in PEER_WORDS):
            raise
        first = (text.splitlines() or [type(exc).__name__])[0][:160]
        from .rundir import STARTED
        how = resume_advice(STARTED[-1] if STARTED else None)
        raise DflearnError(f"process {rank} of {size} lost contact with the other training processes ({first}); "
                           f"one of them failed or was killed: see its message, then continue with {how}") from None


def resume_advice(run_dir) -> str:
    """How to continue a run that stopped: the command when the run directory is known."""
    return f"dflearn train --resume {run_dir}" if run_dir else "--resume"


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_batch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """This process's contiguous slice of a global batch, and its share n_r / N."""
    rank, size = world()
    if size == 1:
        return x, y, 1.0
    xs, ys = x.tensor_split(size)[rank], y.tensor_split(size)[rank]
    return xs, ys, len(ys) / len(y)


def check_batches(batch_size: int, num_samples: int) -> None:
    """Refuse a batch size that leaves some process an empty slice (its mean loss is undefined)."""
    _, size = world()
    last = num_samples % batch_size
    if batch_size < size or 0 < last < size:
        raise DflearnError(f"--batch-size {batch_size} leaves a batch of {last or batch_size} samples for "
                           f"{size} processes; choose a batch size such that every batch has at least one "
                           f"sample per process")


def gradient_sync(weight: float) -> Callable[[torch.optim.Optimizer], None] | None:
    """The hook `train_step` calls before each optimizer step: sum weight * grad over processes."""
    if world()[1] == 1:
        return None

    def sync(optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.flatten() for g in grads]).mul_(weight)
        dist.all_reduce(flat)
        for g, f in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(f.view_as(g))
    return sync


def sum_over_processes(*values: torch.Tensor) -> list[torch.Tensor]:
    """Scalars summed over processes (as float64 on their device); unchanged with one process."""
    if world()[1] == 1:
        return list(values)
    flat = torch.stack([v.double() for v in values])
    dist.all_reduce(flat)
    return list(flat.unbind())


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Give every process rank 0's buffers (BN running statistics drift apart: each
    process normalises its own slice) before evaluating or saving."""
    if world()[1] == 1:
        return
    for b in model.buffers():
        dist.broadcast(b, 0)


def check_identical(tensors: dict[str, torch.Tensor], what: str, fix: str) -> None:
    """Refuse to start unless `tensors` are bitwise the same on every process: each
    process reduces two checksums per tensor (sum, position-weighted sum) to their
    min and max over processes, which agree only if the checksums do."""
    _, size = world()
    if size == 1 or not tensors:
        return
    sums = []
    for t in tensors.values():
        flat = t.detach().flatten().double()
        sums += [flat.sum(), (flat * torch.arange(1, len(flat) + 1, device=flat.device, dtype=flat.dtype)).sum()]
    lo = torch.stack(sums)
    hi = lo.clone()
    dist.all_reduce(lo, dist.ReduceOp.MIN)
    dist.all_reduce(hi, dist.ReduceOp.MAX)
    differs = (lo != hi).view(-1, 2).any(1).tolist()
    if any(differs):
        name = list(tensors)[differs.index(True)]
        raise DflearnError(f"{what} differ between the {size} processes (first: '{name}'); {fix}")


def launch(nproc: int, argv: list[str], run_dir=None) -> None:
    """Run `dflearn ARGV` as `nproc` processes on this machine through
    torch.distributed.run (what `torchrun --standalone --nproc_per_node N` does). `run_dir` names the
    run in the advice of a failure: the launcher may stop the survivors before they say it themselves."""
    from pathlib import Path

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if "WORLD_SIZE" in os.environ:
        raise DflearnError("--nproc given inside a torchrun process; use either torchrun or --nproc, not both")
    # the workers must import this very dflearn, installed or not
    package_root = str(Path(__file__).resolve().parents[2])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    os.environ["DFLEARN_LAUNCHER_PID"] = str(os.getpid())  # workers end with this process (die_with_parent)
    os.environ.setdefault("LOGLEVEL", "ERROR")  # torch elastic's loggers read it when created
    import logging  # the launcher's own log lines repeat what the workers and the line below say
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    from torch.distributed.elastic.multiprocessing.api import SignalException

    try:
        run(parse_args(["--standalone", f"--nproc_per_node={nproc}", "-m", "dflearn", *argv]))
    except SignalException as exc:  # the launcher's handler: the workers have been stopped
        if exc.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise DflearnError(f"stopped by signal {signal.Signals(exc.sigval).name}; the workers were ended; "
                           f"continue with --resume") from None
    except ChildFailedError as exc:
        # Ctrl-C reaches the workers too: each ends with 130 (or dies of SIGINT); that is an interrupt
        if all(f.exitcode in (130, -signal.SIGINT, -signal.SIGTERM) for f in exc.failures.values()) and \
                any(f.exitcode in (130, -signal.SIGINT) for f in exc.failures.values()):
            raise KeyboardInterrupt from None
        # the first failure stops the others (killed by the launcher); say what happened to each
        parts = []
        for rank, f in sorted(exc.failures.items()):
            if f.exitcode < 0:
                try:
                    name = signal.Signals(-f.exitcode).name
                except ValueError:
                    name = str(-f.exitcode)
                parts.append(f"process {rank} was killed by {name}")
            else:
                parts.append(f"process {rank} exited with code {f.exitcode}")
        how = resume_advice(run_dir)
        raise DflearnError(f"training failed under {nproc} processes: {'; '.join(parts)} "
                           f"(the others were stopped); see the message(s) above, then continue with {how}") from None


def without_option(argv: list[str], flag: str) -> list[str]:
    """argv with `flag VALUE` / `flag=VALUE` removed."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out
