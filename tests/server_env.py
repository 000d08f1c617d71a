"""A real `python -m app` server in end-to-end tests (`Server`), and its environment: a free
loopback port, offline model loading, one OpenMP thread, and the given data dir, towers and
initial bridge (every other BRIDGE_* variable of the calling shell dropped)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from apikit import ADMIN_KEY

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(data_dir: Path, clip: Path, clap: Path, bridge: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(
        BRIDGE_HOST="127.0.0.1",
        BRIDGE_PORT=str(free_port()),
        BRIDGE_DATA_DIR=str(data_dir),
        BRIDGE_CLIP_MODEL=str(clip),
        BRIDGE_CLAP_MODEL=str(clap),
        BRIDGE_INITIAL_BRIDGE=str(bridge),
        BRIDGE_DEVICE="cpu",
        BRIDGE_FAISS_GPU="false",
        BRIDGE_SEED_SAMPLES="false",
        BRIDGE_ADMIN_KEY=ADMIN_KEY,
        BRIDGE_LOG_LEVEL="warning",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
    )
    return env


class Server:
    """One `python -m app` process; its output goes to a log file shown on failure."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.url = f"http://127.0.0.1:{env['BRIDGE_PORT']}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> float:
        """Start and wait for /readyz 200; returns the seconds it took."""
        begun = time.monotonic()
        self.launch()
        return self.wait_ready(timeout, begun)

    def launch(self) -> None:
        """Start the process without waiting for it (then ``wait_ready``)."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app"], cwd=REPO, env=self.env, stdout=out, stderr=out
            )

    def wait_ready(self, timeout: float = 60.0, begun: float | None = None) -> float:
        """Wait for /readyz 200; returns the seconds since ``begun`` (default: now)."""
        assert self.proc is not None, "launch() first"
        begun = time.monotonic() if begun is None else begun
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - begun
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.output()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


class QueryLoop(threading.Thread):
    """Fires bridged and native queries back to back until stopped; records every outcome."""

    def __init__(self, url: str, audio_item: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.audio_item = audio_item
        self.stop_flag = threading.Event()
        # (time the query was sent, bridge_version, space)
        self.answers: list[tuple[float, str | None, str]] = []
        self.failures: list[str] = []

    def run(self) -> None:
        bodies = [
            {"item_id": self.audio_item, "target": "image", "k": 5},
            {"text": "a loud dog", "target": "image", "k": 5},
        ]
        with httpx.Client(base_url=self.url, timeout=30) as client:
            n = 0
            while not self.stop_flag.is_set():
                body = bodies[n % 2]
                n += 1
                sent = time.monotonic()
                try:
                    r = client.post("/v1/search", json=body)
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if r.status_code != 200 or not r.json()["results"]:
                    self.failures.append(f"{r.status_code}: {r.text[:300]}")
                    continue
                answer = r.json()
                self.answers.append((sent, answer["bridge_version"], answer["space"]))
