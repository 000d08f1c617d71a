"""Start and stop the benchmark server (bridge/bench/appserver.py) as a child process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bridge.bench.httpclient import get
from bridge.types import ServiceConfig

ROOT = Path(__file__).resolve().parents[2]  # the folder that holds bridge/ and app/


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(
    config: ServiceConfig | None,
    port: int,
    extra: dict[str, str] | None = None,
    initial_bridge: str = "none",
    root: Path = ROOT,
) -> dict[str, str]:
    """The environment of a `python -m app` child on loopback serving ``config``'s data
    directory (``extra`` over this process's environment, then the service's settings)."""
    env = {**os.environ, **(extra or {})}
    env.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `python -m app` sets it, before NumPy
    env |= {"BRIDGE_HOST": "127.0.0.1", "BRIDGE_PORT": str(port), "PYTHONPATH": str(root)}
    if config is None:
        return env
    return {
        **env,
        "BRIDGE_DATA_DIR": str(config.data_dir),
        "BRIDGE_CLIP_MODEL": config.clip_model,
        "BRIDGE_CLAP_MODEL": config.clap_model,
        "BRIDGE_INITIAL_BRIDGE": initial_bridge,
        "BRIDGE_DEVICE": config.device,
        "BRIDGE_SEED_SAMPLES": "false",
        "BRIDGE_LOG_LEVEL": "warning",
    }


def server_command(repo: Path | None, options: Sequence[str] = ()) -> list[str]:
    """The benchmark server of this checkout, or of ``repo`` (another checkout, for a
    same-run A/B of two versions of the code: one with bridge/bench/appserver.py, or one
    from before the move, with scripts/bench/own_floor.py)."""
    if repo is None or (repo / "bridge" / "bench" / "appserver.py").is_file():
        return [sys.executable, "-m", "bridge.bench.appserver", *options]
    script = repo / "scripts" / "bench" / "own_floor.py"
    if script.is_file() and not options:
        return [sys.executable, str(script)]
    raise FileNotFoundError(f"{repo}: no benchmark server (bridge/bench/appserver.py) found")


def start_server(
    config: ServiceConfig,
    extra_env: dict[str, str] | None = None,
    options: Sequence[str] = (),
    repo: Path | None = None,
    ready_timeout: float = 600.0,
    initial_bridge: str = "none",
) -> tuple[subprocess.Popen[bytes], str]:
    """The benchmark server (`python -m app` plus the floor route, and ``options`` of
    bridge.bench.appserver) on ``config``'s data, on a free loopback port, once /readyz
    answers 200 (within ``ready_timeout`` seconds): (the process, its base URL)."""
    port = free_port()
    root = ROOT if repo is None else repo.resolve()
    env = child_env(config, port, extra_env, initial_bridge=initial_bridge, root=root)
    proc = subprocess.Popen(server_command(repo, options), cwd=root, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if get(f"{base}/readyz", timeout=2)[0] == 200:
                return proc, base
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not become ready")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(30)


def run_job(
    name: str, job_args: dict[str, Any], config: ServiceConfig | None = None
) -> dict[str, Any]:
    """An in-process measurement of the app that `python -m app` builds (bridge.bench.appserver
    ``--job NAME``) in a child process, on ``config``'s data (its initial bridge installed)
    when given; answers the job's result."""
    initial = (
        "none" if config is None or config.initial_bridge is None else str(config.initial_bridge)
    )
    with tempfile.TemporaryDirectory(prefix="bench-job-") as tmp:
        out = Path(tmp) / "result.json"
        options = ["--job", name, "--job-args", json.dumps(job_args), "--out", str(out)]
        subprocess.run(
            server_command(None, options),
            cwd=ROOT,
            env=child_env(config, free_port(), initial_bridge=initial),
            check=True,
        )
        return dict(json.loads(out.read_text()))


@contextmanager
def serving(
    config: ServiceConfig,
    extra_env: dict[str, str] | None = None,
    options: Sequence[str] = (),
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`start_server` for the length of a with block."""
    proc, base = start_server(config, extra_env, options)
    try:
        yield proc, base
    finally:
        stop(proc)
