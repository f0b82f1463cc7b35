"""Writing files the export stage publishes: always atomically, always readable by others."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from train.files import atomic_output


def make_readable(path: str | os.PathLike) -> None:
    """Give `path` the mode of a normally created file. atomic_output's temporary file is
    private (0600, from mkstemp); a model shipped like that is unreadable to other users."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)
        make_readable(tmp)


def copy_file(source: str | os.PathLike, dest: str | os.PathLike) -> Path:
    with atomic_output(dest) as tmp:
        shutil.copyfile(source, tmp)
        make_readable(tmp)
    return Path(dest)
