"""Atomic file writes: a reader (or a process killed mid-write) never sees a partial file."""

import os
import tempfile
from pathlib import Path
from typing import Callable, Union


def atomic_write(path: Union[str, os.PathLike], write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    The rename is atomic on POSIX, so ``path`` holds either the old or the new content, with
    the permissions a plain ``open(path, "w")`` would give (mkstemp's 0600 widened by the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
