"""A real `soraflow serve` on a free localhost port, for the server's tests and its benchmark.

Each server runs in its own session (process group), so teardown can end it and its workers even
when a test killed the server with SIGKILL halfway.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "test-key-0123456789"


def make_random_model(folder: Path, **kwargs) -> Path:
    """A tiny random model folder (scripts/make_random_model.py): 48x32, 1 s, 1 step by default."""
    spec = importlib.util.spec_from_file_location("make_random_model", ROOT / "scripts" / "make_random_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    options = {"height": 32, "width": 48, "steps": 1, "window": 5, "overlap": 2} | kwargs
    module.make_random_pipeline(**options).save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``soraflow serve`` as a subprocess; ``start()`` returns once a worker has loaded the model."""

    def __init__(self, model: Path, data_dir: Path, log: Path, *, api_key: str | None = API_KEY, args=()):
        self.model, self.data_dir, self.log_path, self.api_key, self.args = model, data_dir, log, api_key, list(args)
        self.process: subprocess.Popen | None = None
        self.groups: list[int] = []  # every start's process group, for teardown after a kill -9
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=30)

    def start(self, timeout: float = 90.0) -> "Server":
        self.port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        env.pop("SORAFLOW_API_KEY", None)
        cmd = [sys.executable, "-m", "soraflow.cli", "serve", "--model", str(self.model), "--port", str(self.port),
               "--data-dir", str(self.data_dir), "--threads", "1", *self.args]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                            start_new_session=True)
        self.groups.append(self.process.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", headers=self.headers, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not become ready in {timeout:g} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()[-4000:] if self.log_path.exists() else ""

    def worker_pids(self) -> list[int]:
        return [w["pid"] for w in httpx.get(f"{self.url}/healthz", headers=self.headers).json()["workers"]]

    def kill9(self) -> None:
        """SIGKILL the server process alone (not its workers): what `kill -9 PID` does."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                pass
        self.process.wait()
        for group in self.groups:  # whatever is left: the server if it hung, workers of a killed one
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.groups.clear()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True
