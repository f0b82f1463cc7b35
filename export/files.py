"""Files the export stage publishes besides models: always through atomic_output."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from train.files import atomic_output


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def copy_file(source: str | os.PathLike, dest: str | os.PathLike) -> Path:
    with atomic_output(dest) as tmp:
        shutil.copyfile(source, tmp)
    return Path(dest)
