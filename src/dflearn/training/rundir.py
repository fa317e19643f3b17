"""Run directories that defend themselves: one writer at a time, and writes that are never half done.

- `RunLock(out)`: an exclusive `fcntl.flock` on `out/.lock`, held for the life of a run. A second
  writer is refused in one line naming the holder's process id (written into the lock file). The
  kernel drops a flock when its process dies however it dies, so a lock left by a dead process is
  simply free again: the next run takes it over, there is no stale-lock heuristic to get wrong.
- `atomic_write(path, write)`: the new contents go to a temporary file with a unique name, created
  exclusively in the same directory (`O_CREAT | O_EXCL | O_NOFOLLOW`: a planted file or symlink
  of that name is never opened, let alone followed); the file is fsynced, renamed over `path`
  (rename replaces a symlink at `path`, never writes through it) and the directory fsynced. On any
  error the temporary is removed and the previous `path` is untouched; an OSError (a full disk, a
  read-only folder) becomes one DflearnError line. Ctrl-C during the write waits until the file is
  in place (`interrupts_held`): torch.save's zip writer turns an interrupt inside it into a
  RuntimeError ('unexpected pos'), which read as a failed write, not as the interrupt it was.
- `write_json` / `write_lines`: JSON through `atomic_write`, with `allow_nan=False` so no
  NaN or Infinity (not JSON) is ever written; `read_jsonl` tolerates a torn last line.
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, IO

from ..errors import DflearnError

LOCK = ".lock"
ACTIVE: list[Path] = []  # run directories this process holds now
STARTED: list[Path] = []  # run directories this process has written (the CLI names the last on Ctrl-C)


class RunLock:
    """Exclusive lock on a run directory (created if missing); `release()` or process exit frees it."""

    def __init__(self, out: str | os.PathLike, what: str = "run"):
        import fcntl

        self.out, self.fd = Path(out), None
        check_out(self.out)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.out / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise DflearnError(f"cannot use {self.out} as a {what} directory: {_reason(exc)}; "
                               f"choose another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise DflearnError(f"{self.out} is in use by another dflearn {what} (process {holder}); wait for "
                                   f"it to end or choose another --out") from None
            raise DflearnError(f"cannot lock {self.out}: {_reason(exc)}") from None
        self.fd = fd
        remove_stale_temporaries(self.out)  # ours alone now: any temporary is a killed writer's
        try:  # who holds it, for the message a second writer gets (informative only: the flock decides)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        ACTIVE.append(self.out)

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)  # closing the only descriptor drops the flock
            if self.out in ACTIVE:
                ACTIVE.remove(self.out)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def __del__(self):
        self.release()


TEMPORARY = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.tmp$")  # atomic_write's names


def remove_stale_temporaries(folder: Path) -> None:
    """Remove temporaries a killed writer left (call with the lock held); unlink never follows a link."""
    try:
        for entry in os.scandir(folder):
            if TEMPORARY.match(entry.name) and not entry.is_dir(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass
    except OSError:
        pass


def check_out(out: str | os.PathLike) -> None:
    """Refuse an empty path (it would be the current folder) and a path naming a file."""
    if str(out).strip() == "":
        raise DflearnError("--out is empty; name a run directory (e.g. --out runs/x)")
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise DflearnError(f"--out {p} is a file, not a directory; choose another --out")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temporary(path: Path) -> Path:
    """A hidden name beside `path`, unique to this process and call: where a new version is made."""
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def link_atomic(source: Path, path: Path) -> bool:
    """Make `path` a hard link to `source`, atomically (a link under a temporary name, then a
    rename over `path`); False, with nothing changed, where the file system has no hard links.
    Safe beside `atomic_write`: it replaces `source` by a rename, so the linked file never changes."""
    folder = path.parent
    candidate = _temporary(path)
    try:
        os.link(source, candidate)
    except OSError:
        return False
    try:
        os.replace(candidate, path)
    except OSError:
        try:
            os.unlink(candidate)
        except OSError:
            pass
        return False
    fsync_dir(folder)
    return True


@contextmanager
def interrupts_held():
    """Ctrl-C inside the block is raised when the block ends, not in the middle of it.

    Only where Python's own handler is in place (the main thread, no handler of the caller's)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    caught = []
    signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], *, keep: str = "") -> None:
    """Replace `path` by what `write(f)` writes to a binary file, atomically and durably.

    `keep` ends the error message (e.g. what the user should do); the previous file is always intact."""
    with interrupts_held():
        _atomic_write(Path(path), write, keep)


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None], keep: str) -> None:
    folder = path.parent
    tmp = fd = None
    try:
        for _ in range(100):
            candidate = _temporary(path)
            try:
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                continue
            tmp = candidate
            break
        else:
            raise OSError(errno.EEXIST, "no free temporary name")
        with os.fdopen(fd, "wb") as f:
            fd = None
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise DflearnError(f"cannot write {path}: {_reason(exc)}; its previous version is intact"
                           + (f"; {keep}" if keep else "")) from None
    except RuntimeError as exc:  # torch.save reports a failed write as a RuntimeError
        raise DflearnError(f"cannot write {path}: {str(exc).splitlines()[0][:160]}; its previous version is "
                           f"intact" + (f"; {keep}" if keep else "")) from None
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    fsync_dir(folder)


def finite_or_none(obj):
    """`obj` with every non-finite float replaced by None (the project's 'undefined')."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def dumps(obj, **kwargs) -> str:
    return json.dumps(obj, allow_nan=False, **kwargs)


def write_json(path: str | os.PathLike, obj, *, keep: str = "") -> None:
    text = dumps(obj, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()), keep=keep)


def write_lines(path: str | os.PathLike, rows: list, *, keep: str = "") -> None:
    """A JSON-lines file of `rows`, written whole and atomically."""
    text = "".join(dumps(r) + "\n" for r in rows)
    atomic_write(path, lambda f: f.write(text.encode()), keep=keep)


def read_json(path: str | os.PathLike, what: str = "file"):
    """A JSON file's value, or a one-line DflearnError naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise DflearnError(f"{path} is not a readable {what} ({first}); the run directory is damaged: "
                           f"repair or delete it") from None


def read_jsonl(path: str | os.PathLike) -> list:
    """Rows of a JSON-lines file; a torn last line (a writer that died mid-line) is dropped,
    a damaged line elsewhere is a DflearnError."""
    path = Path(path)
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError as exc:
        raise DflearnError(f"cannot read {path}: {_reason(exc)}") from None
    rows = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:
                break
            raise DflearnError(f"{path}: line {i + 1} is not JSON; the file is damaged") from None
        if isinstance(row, dict):
            rows.append(row)
    return rows
