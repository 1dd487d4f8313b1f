"""Start the real `python app.py` on a free port for tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """Context manager: the app in a subprocess; `.url`, `.output()`."""

    def __init__(self, *args: str, env: dict | None = None, timeout: float = 180):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args, self.timeout = args, timeout
        self.env = {**os.environ, "GRADIO_SERVER_PORT": str(self.port),
                    "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1",
                    **(env or {})}
        self.log = None

    def __enter__(self):
        import tempfile

        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), *self.args],
                                     cwd=ROOT, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited early:\n{self.output()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/config", timeout=2) as r:
                    if r.status == 200:
                        self.ready_seconds = time.perf_counter() - self.started
                        return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise TimeoutError(f"app did not start:\n{self.output()[-3000:]}")

    def alive(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/config", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
