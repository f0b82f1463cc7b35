"""Atomic file output: a crash or Ctrl-C never leaves a half-written file behind."""
from __future__ import annotations

import glob
import os
import shutil
import signal
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file private (0600); give it the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def copy_file(source: str | os.PathLike, dest: str | os.PathLike) -> Path:
    with atomic_output(dest) as tmp:
        shutil.copyfile(source, tmp)
    return Path(dest)


def stale_temps(directory: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Temporary files ``atomic_output`` left beside these outputs (named
    ``.NAME.<random>.tmp``): what a SIGKILL or power loss during a write
    leaves behind; nothing else matches that pattern."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for name in names for p in directory.glob(f".{glob.escape(name)}.*.tmp") if p.is_file())


def clean_stale_temps(directory: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Remove ``stale_temps`` (called when a command starts writing into ``directory``)."""
    removed = []
    for p in stale_temps(directory, names):
        try:
            p.unlink()
            removed.append(p)
        except OSError:  # gone already, or not ours to remove: harmless
            pass
    return removed


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (as Ctrl-C does) instead of ending the
    process on the spot, so that ``atomic_output`` removes its temporary file."""
    def handler(_signum, _frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: keep the default behaviour
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
