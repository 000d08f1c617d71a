"""`scripts/cluster.py` (`make cluster`): replicas on consecutive ports sharing one data
directory and a Milvus server; they serve each other's items, and SIGTERM stops them all.

The session's Milvus server stands in for the one `make cluster` starts itself (--milvus-uri):
the embedded server's etcd ports allow one per machine, and the tests' fixture holds it.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from apikit import train_tiny_bridge
from media_factory import make_png_bytes
from server_env import REPO, free_port, server_env

from bridge.index.milvus_server import EmbeddedMilvus


def _consecutive_free_ports(count: int) -> int:
    for _ in range(50):
        first = free_port()
        if first + count > 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise AssertionError(f"no {count} consecutive free ports")


def _refused(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=2)
    except httpx.ConnectError:
        return True
    return False


def test_cluster_serves_replicas_and_stops_them_on_sigterm(
    tmp_path: Path,
    tiny_clip_dir: Path,
    tiny_clap_dir: Path,
    tiny_clip_encoder: Any,
    tiny_clap_encoder: Any,
    milvus_server: EmbeddedMilvus,
) -> None:
    bridge = train_tiny_bridge(tiny_clip_encoder, tiny_clap_encoder, tmp_path / "bridge")
    env = server_env(tmp_path / "unused", tiny_clip_dir, tiny_clap_dir, bridge)
    port = _consecutive_free_ports(2)
    log = tmp_path / "cluster.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "scripts/cluster.py", "--replicas", "2", "--port", str(port),
             "--dir", str(tmp_path / "cluster"), "--milvus-uri", milvus_server.uri],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    urls = [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
    try:
        deadline = time.monotonic() + 120
        while "cluster ready: " + " ".join(urls) not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
            time.sleep(0.2)
        first, second = urls
        r = httpx.post(  # the first image item: creates the collection (seconds)
            f"{first}/v1/items",
            files={"file": ("a.png", make_png_bytes(seed=3), "image/png")},
            timeout=60,
        )
        assert r.status_code == 201, r.text
        assert httpx.get(f"{second}/v1/items/{r.json()['id']}").status_code == 200
        assert (tmp_path / "cluster" / "data" / "store.sqlite").is_file()  # the one data dir

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0, log.read_text(errors="replace")[-4000:]
        assert all(_refused(url) for url in urls)  # every replica stopped with it
    finally:
        if proc.poll() is None:  # a failed assertion: SIGTERM stops the replicas too
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()  # the replicas get SIGTERM from the kernel (PR_SET_PDEATHSIG)
                proc.wait()


PARENT = """
import subprocess, sys, time
sys.path.insert(0, "scripts")
from cluster import _die_with_parent
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                         preexec_fn=_die_with_parent)
print(child.pid, flush=True)
time.sleep(120)
"""


def test_replicas_die_with_a_killed_launcher() -> None:
    """SIGKILL cannot be handled, so the launcher cannot stop its replicas then: the kernel
    does (PR_SET_PDEATHSIG), and no replica outlives the cluster."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child}").exists() and _state(child) != "Z":
            assert time.monotonic() < deadline, "the replica outlived its launcher"
            time.sleep(0.1)
    finally:
        if parent.poll() is None:
            parent.kill()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (FileNotFoundError, IndexError):
        return "gone"
