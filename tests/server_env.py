"""The environment of a real `python -m app` server in end-to-end tests: a free loopback port,
offline model loading, one OpenMP thread, and the given data dir, towers and initial bridge
(every other BRIDGE_* variable of the calling shell dropped)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from apikit import ADMIN_KEY


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
