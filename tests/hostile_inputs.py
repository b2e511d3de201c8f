"""Helpers the hostile-input tests share: hosts that accept TCP and never speak SSH, and one
value replaced anywhere in a parsed document."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def silent_nodes(tmp_path: Path, count: int) -> Iterator[tuple[Path, list[socket.socket]]]:
    """An inventory of `count` nodes on one loopback port that accepts and says nothing, as a
    hung sshd or a tarpit does; yields it and the connections accepted so far."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    inv = tmp_path / "hosts.yaml"
    inv.write_text("all:\n  hosts:\n" + "".join(
        f"    silent{i}:\n      ansible_host: 127.0.0.1\n      ansible_port: {port}\n"
        for i in range(count)))
    try:
        yield inv, held
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        srv.close()


def replace_at(doc: object, path: list[int], value: object) -> object:
    """`doc` with the value at `path` replaced (each index taken modulo its container's size,
    a dict's keys in sorted order); the value itself where the path runs out or hits a leaf."""
    if not path or not isinstance(doc, (dict, list)) or not doc:
        return value
    if isinstance(doc, dict):
        keys = sorted(doc, key=str)
        k = keys[path[0] % len(keys)]
        return {**doc, k: replace_at(doc[k], path[1:], value)}
    i = path[0] % len(doc)
    return [*doc[:i], replace_at(doc[i], path[1:], value), *doc[i + 1:]]
