"""`python scripts/cluster.py` (`make cluster`): replicas on one machine, for scale-out development.

In the foreground, without docker: a real Milvus server (the `milvus-server` extra's embedded
standalone; or an existing one with --milvus-uri) and REPLICAS `python -m app` processes on
consecutive ports from --port, sharing one data directory under --dir. Every BRIDGE_* setting
of the calling shell passes through to the replicas, except the ones this sets: the backend,
the Milvus URI, the data directory and the port. Prints the URLs once every replica is ready;
Ctrl-C or SIGTERM stops the replicas, then Milvus. A replica that exits on its own stops the
cluster (exit 1). docs/deployment.md, "Replicas", says how they share the work.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import httpx

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT_SECONDS = 180.0
STOP_TIMEOUT_SECONDS = 20.0
DEFAULT_MILVUS_PORT = 19530


class _Stop(Exception):
    """SIGINT or SIGTERM arrived."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _die_with_parent() -> None:
    """In a replica, before exec: the kernel sends it SIGTERM when this launcher dies, even
    by SIGKILL, so no replica outlives the cluster (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _replica_env(data_dir: Path, milvus_uri: str, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        BRIDGE_BACKEND="milvus",
        BRIDGE_MILVUS_URI=milvus_uri,
        BRIDGE_DATA_DIR=str(data_dir),
        BRIDGE_PORT=str(port),
    )
    return env


def _url(env: dict[str, str]) -> str:
    host = env.get("BRIDGE_HOST", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{host}:{env['BRIDGE_PORT']}"


def _wait_ready(replicas: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    waiting = dict(replicas)
    while waiting:
        for url, proc in list(waiting.items()):
            if proc.poll() is not None:
                raise RuntimeError(f"replica {url} exited with {proc.returncode} while starting")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    print(f"replica ready: {url}", flush=True)
                    del waiting[url]
            except httpx.TransportError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {READY_TIMEOUT_SECONDS:.0f} s: {sorted(waiting)}")
        time.sleep(0.3)


def _stop(replicas: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    for _, proc in replicas:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for url, proc in replicas:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"replica {url} did not stop in {STOP_TIMEOUT_SECONDS:.0f} s; killed", flush=True)
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/cluster.py", description=__doc__)
    parser.add_argument("--replicas", type=int, default=int(os.environ.get("REPLICAS", 2)))
    parser.add_argument("--port", type=int, default=int(os.environ.get("CLUSTER_PORT", 8001)))
    parser.add_argument(
        "--dir", type=Path, default=Path(os.environ.get("CLUSTER_DIR", "var/cluster"))
    )
    parser.add_argument(
        "--milvus-uri",
        default=os.environ.get("CLUSTER_MILVUS_URI", ""),
        help="an existing Milvus server (http://host:19530) instead of starting one",
    )
    parser.add_argument("--milvus-port", type=int, default=DEFAULT_MILVUS_PORT)
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error(f"--replicas must be at least 1, got {args.replicas}")
    if not 1 <= args.port <= 65535 - args.replicas:
        parser.error(f"--port {args.port} leaves no room for {args.replicas} replicas")

    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    milvus = None
    replicas: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        uri = args.milvus_uri
        if not uri:
            from bridge.index.milvus_server import EmbeddedMilvus

            print(f"starting Milvus in {args.dir / 'milvus'} ...", flush=True)
            milvus = EmbeddedMilvus(args.dir / "milvus", args.milvus_port)
            milvus.start()
            uri = milvus.uri
        print(f"Milvus: {uri}", flush=True)
        for i in range(args.replicas):
            env = _replica_env(args.dir / "data", uri, args.port + i)
            proc = subprocess.Popen(
                [sys.executable, "-m", "app"], cwd=REPO, env=env, preexec_fn=_die_with_parent
            )
            replicas.append((_url(env), proc))
        _wait_ready(replicas)
        print("cluster ready: " + " ".join(url for url, _ in replicas), flush=True)
        while True:
            for url, proc in replicas:
                if proc.poll() is not None:
                    raise RuntimeError(f"replica {url} exited with {proc.returncode}")
            time.sleep(0.5)
    except _Stop as stop:
        print(f"{stop}: stopping the cluster", flush=True)
        return 0
    except Exception as exc:
        print(f"cluster: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stop(replicas)
        if milvus is not None:
            milvus.stop()


if __name__ == "__main__":
    sys.exit(main())
