"""Start and stop the MongoDB-wire test server (SecantusDB) on loopback.

Used by the test session and the benchmarks. Run it by hand too:

    python tests/mongo_server.py            # prints the URL, serves until Ctrl-C
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pymongo

START_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MongoTestServer:
    """One SecantusDB process with its data directory; restartable on the same port.

    Without ``data_dir`` the server makes a temporary one and :meth:`stop`
    removes it (pass ``keep_data=True`` to restart on the same data); a
    ``data_dir`` given by the caller is the caller's to remove. ``options``
    are extra command-line flags, e.g. ``["--auth"]``.
    """

    def __init__(self, port: int | None = None, data_dir: str | None = None,
                 options: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.owns_data = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="minibatch-mongo-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.options = list(options or [])
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "server.log"

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/minibatch_test?serverSelectionTimeoutMS=5000"

    def start(self) -> MongoTestServer:
        command = [
            sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(self.port),
            "--storage-path", str(self.data_dir / "db"), "--log-level", "WARNING", *self.options,
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            f"mongodb://127.0.0.1:{self.port}", serverSelectionTimeoutMS=500
        )
        try:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"test MongoDB server exited with {self.process.returncode}; "
                        f"log: {self.log_path.read_text(errors='replace')[-2000:]}"
                    )
                try:
                    client.admin.command("ping")
                    return
                except pymongo.errors.PyMongoError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"test MongoDB server not ready in {START_TIMEOUT}s") from None
        finally:
            client.close()

    def stop(self, keep_data: bool = False) -> None:
        """Stop the server; remove its own temporary data unless ``keep_data``."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)
        self.process = None
        if self.owns_data and not keep_data and self.data_dir.exists():
            shutil.rmtree(self.data_dir)


if __name__ == "__main__":
    server = MongoTestServer(port=int(os.environ.get("PORT", "0")) or None).start()
    print(server.url, flush=True)
    try:
        server.process.wait()  # type: ignore[union-attr]
    except KeyboardInterrupt:
        server.stop()
