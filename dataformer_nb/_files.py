"""Opening a file that is untrusted input (batch records, a dataformer cache, input files)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # Windows has neither: links and FIFOs are rarer there
NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def open_untrusted(path: str | os.PathLike[str], max_bytes: int) -> BinaryIO:
    """``path`` opened for reading without following a link (a record linked to /dev/zero gave
    MemoryError) or waiting on a FIFO (it hung): a regular file of at most ``max_bytes``, else
    OSError or ValueError."""
    fd = os.open(Path(path), os.O_RDONLY | NOFOLLOW | NONBLOCK)
    file = os.fdopen(fd, "rb")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > max_bytes:
            raise ValueError(f"larger than {max_bytes:,} bytes")
    except BaseException:
        file.close()
        raise
    return file
