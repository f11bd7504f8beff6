"""A cross-process doorbell for an embedded store: wake readers without polling.

SQLite cannot tell another process that a transaction committed. Every
process that reads a store file binds one Unix datagram socket in a folder
beside the file (``<file>.bells/``, or a folder under the temporary directory
named after the file's path when that name would be too long for a socket);
a process that commits sends a one-byte datagram to each socket in the folder.
The reader's watch thread waits on its socket with ``select``, so a commit in
another process wakes it at once, with no server and no polling.

The doorbell only hurries readers along; it never carries data, and readers
keep a slow poll of the store's change counter as a fallback. A ring that is
lost (a full socket buffer, a folder that cannot be created, a platform with
no Unix datagram sockets) delays delivery until that poll, never loses it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import select
import socket
import tempfile
import threading
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
SUPPORTED = hasattr(socket, "AF_UNIX")


def bell_folder(database: Path) -> Path:
    """The folder holding the bells of the store file ``database``."""
    beside = database.with_name(database.name + ".bells")
    if len(os.fsencode(beside)) + 40 <= _MAX_SOCKET_PATH:
        return beside
    digest = hashlib.sha256(os.fsencode(database.resolve())).hexdigest()[:24]
    return Path(tempfile.gettempdir()) / f"minibatch-bells-{os.getuid()}" / digest


class Bell:
    """One process's bell: a socket other processes ring after they commit.

    ``fileno()`` becomes readable when rung; :meth:`drain` empties it. Closing
    the bell removes its socket file.
    """

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{os.getpid()}-{uuid.uuid4().hex[:12]}.sock"
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._socket.bind(os.fspath(self.path))
            self._socket.setblocking(False)
        except OSError:
            self._socket.close()
            raise

    def fileno(self) -> int:
        """The socket's descriptor, for ``select``."""
        return self._socket.fileno()

    def wait(self, timeout: float, *others: int) -> bool:
        """Block until rung (or one of the ``others`` descriptors is readable)
        or ``timeout`` seconds pass; True if anything woke it."""
        readable, _, _ = select.select([self._socket.fileno(), *others], [], [], max(0.0, timeout))
        return bool(readable)

    def drain(self) -> int:
        """Empty the socket; the number of rings it held."""
        count = 0
        while True:
            try:
                self._socket.recv(64)
            except (BlockingIOError, InterruptedError):
                return count
            except OSError:
                return count
            count += 1

    def close(self) -> None:
        """Stop listening and remove the socket file."""
        self._socket.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class Ringer:
    """Rings every bell in a folder, after a commit.

    The folder's listing is cached and read again only when the folder
    changes (a bell added or removed), so a ring costs one ``stat`` and one
    datagram per reading process. Bells of processes that died (nobody bound
    to the socket) are removed as they are found.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._stamp: int | None = None
        self._targets: list[str] = []
        self._socket: socket.socket | None = None
        self.own: str | None = None
        """This process's own bell, skipped (its watcher is woken directly)."""

    def ring(self) -> None:
        """Send one datagram to each bell; never raises."""
        try:
            stamp = os.stat(self.folder).st_mtime_ns
        except OSError:
            return  # no folder: no process listens
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    names = os.listdir(self.folder)
                except OSError:
                    names = []
                self._targets = [os.fspath(self.folder / n) for n in names if n.endswith(".sock")]
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            sock, targets, own = self._socket, self._targets, self.own
        for target in targets:
            if target == own:
                continue
            try:
                sock.sendto(b"\x01", target)
            except (BlockingIOError, InterruptedError):
                pass  # its buffer is full of rings: that reader is awake already
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                    self._forget(target, stale=exc.errno == errno.ECONNREFUSED)
                else:
                    log.debug("doorbell %s: %s", target, exc)

    def _forget(self, target: str, stale: bool) -> None:
        """Drop a bell nobody answers; remove its file if its process is gone."""
        if stale:
            with contextlib.suppress(OSError):
                os.unlink(target)
        with self._lock:
            self._stamp = None

    def close(self) -> None:
        """Release the sending socket."""
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
