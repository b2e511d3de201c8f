"""Reading a file named by a user or found in a bundle, safely: a regular file only (a FIFO
or a device is refused before anything blocks on it), and at most a given number of bytes,
counted while reading rather than trusted from the size the file claims."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class NotRegularFile(OSError):
    """The path is a FIFO, a device, a socket or a directory."""


class TooLarge(OSError):
    """The file holds more than the limit."""


def read_at_most(path: Path, limit: int, *, follow_links: bool = True) -> bytes:
    """The bytes of the regular file `path`, at most `limit`. Raises NotRegularFile, TooLarge,
    or the OSError of opening it (ELOOP for a link when `follow_links` is false)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        flags |= os.O_NOFOLLOW
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise NotRegularFile(f"{path} is not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{path} is larger than {limit} bytes")
    return data
