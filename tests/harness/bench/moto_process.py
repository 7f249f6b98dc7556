"""The bench's AWS: a moto server in a process of its own (``python -m tests.harness.bench.moto_process PORT``).

AWS is not in the service's process, nor in the fake Stripe's: a moto server sharing the parent's
interpreter lock with the fake Stripe and the HTTP clients would slow all three down under load. DynamoDB's
conditional writes are serialized as ``local_api`` does (moto's server threads do not apply them atomically).
The server runs until its stdin closes. ``MotoProcess`` starts it; this module imports little, so that the
bench can start moto before its own (slow) imports.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


class MotoProcess:
    """A moto server on a free port of 127.0.0.1, started at once; ``wait_ready`` before use."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.harness.bench.moto_process", str(self.port)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout_seconds: float = 60) -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the moto server exited ({self.process.returncode})")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the moto server did not start within {timeout_seconds:.0f} s")

    def cpu_seconds(self) -> float | None:
        """CPU time the server has used so far (Linux), or None."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def stop(self) -> None:
        """End the server this object started (its state is thrown away)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdin:
            self.process.stdin.close()


def main() -> None:
    import logging

    from moto.server import ThreadedMotoServer

    from tests.harness.local_api import serialize_moto_dynamodb_writes

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    serialize_moto_dynamodb_writes()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]))
    with contextlib.redirect_stdout(sys.stderr):  # moto announces itself on stdout
        server.start()
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
