"""Service benchmark (issue 4, "Benchmark"): search latency and throughput against raw FAISS.

    .venv/bin/python scripts/bench/service_bench.py --sizes 10000 100000 --clients 1 8 32 \\
        --queries 128 --json docs/benchmarks/service.json

For each collection size N it measures, with 1, 8 and 32 concurrent clients:
- query by vector (a `clip` vector, target image: native CLIP index), by audio file (a WAV
  upload, target image: decode -> CLAP -> CLAP projector -> shared image index) and by text
  (CLIP text tower -> native CLIP index; concurrent text queries are encoded in one pass);
- through the in-process facade (BridgeService.search from client threads) and through real
  HTTP (`python -m app` as a uvicorn subprocess on loopback; clients are keep-alive
  connections of a minimal asyncio HTTP/1.1 client, see `_http_level`);
- the floor: raw FAISS (one query at a time) on the service's own index, in the service's
  own process, with the same final query vectors (for audio: the encoded and projected
  queries); see scripts/bench/own_floor.py. With one client the floor is interleaved (one
  raw search of the same vector right before each service query) and scans the way the
  service does: where the service splits a lone scan over threads (bridge/index/split_scan.py, at
  100k), the floor runs raw `faiss.knn` on the same slices in as many threads. With more
  clients, a run of single-threaded raw searches right before the cell (the throughput
  target is against "raw FAISS single-threaded"). For reference, one-client rows also carry
  a single-threaded run on the served index (`floor_1thread`) and the floor of a fresh
  process that builds its own copy of the vectors (the method of earlier runs,
  `floor_fresh`).
Overhead = service p50 - floor p50. It then times a retrain job on the N items (captions ->
train -> re-project every item -> new shared indexes -> evaluate) and the swap (activate).

Items are synthetic: N random unit vectors inserted straight into the item store as image
items (plus --audio-items audio items as audio memory), because encoding 100,000 media files
on this machine would take hours and the search path never looks at media again: it reads
raw embeddings from the store, and the indexes are built from those. Audio queries do run
the full decode + encode path. Encoders: --clip-model/--clap-model, or (default) tiny random
CLIP/CLAP stand-ins with --dim-wide projections built like tests/tiny_models.py, so vector
width matches real CLIP/CLAP (512); audio-query times therefore include a tiny CLAP tower,
not a real HTSAT (see the per-stage encode time to scale it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(REPO / "scripts" / "bench"))

import own_floor  # noqa: E402

from bridge.types import SearchQuery, ServiceConfig, Upload  # noqa: E402

K = 10


# -- setup ----------------------------------------------------------------------------------


def build_stand_in_encoders(workdir: Path, dim: int) -> tuple[str, str]:
    """Tiny random CLIP/CLAP models with `dim`-wide projections (tests/tiny_models.py)."""
    import tiny_models

    tiny_models.TINY_CLIP_DIM = dim  # the builders read these module constants
    tiny_models.TINY_CLAP_DIM = dim
    clip = tiny_models.build_tiny_clip(workdir / "clip")
    clap = tiny_models.build_tiny_clap(workdir / "clap")
    return str(clip), str(clap)


def make_bridge(path: Path, clip_dim: int, clap_dim: int, hidden: int, shared: int) -> Path:
    import torch

    from bridge.model.config import ProjectorConfig
    from bridge.model.projectors import BridgeModel, save_checkpoint

    torch.manual_seed(0)
    config = ProjectorConfig(
        clip_dim=clip_dim, clap_dim=clap_dim, hidden_dim=hidden, shared_dim=shared
    )
    return save_checkpoint(path, BridgeModel(config), None, {"note": "random benchmark bridge"})


def synthetic_service(
    work: Path, items: int, dim: int = 512
) -> tuple[ServiceConfig, np.ndarray, np.random.Generator]:
    """A data dir under ``work`` with ``items`` random image vectors and 1,000 audio ones,
    stand-in encoders and a random bridge: (config to open or serve it, the image vectors,
    the seeded generator they came from, for further draws). For the scripts that look at
    one cell (server_cpu.py, http_overhead.py)."""
    from bridge.encode.encoders import load_encoder

    clip_id, clap_id = build_stand_in_encoders(work, dim)
    rng = np.random.default_rng(0)
    images, audio = unit_rows(rng, items, dim), unit_rows(rng, 1000, dim)
    clip, clap = load_encoder("clip", clip_id, "cpu"), load_encoder("clap", clap_id, "cpu")
    populate_store(work / "var", images, audio, clip.model_id, clap.model_id)
    config = ServiceConfig(
        data_dir=work / "var",
        clip_model=clip_id,
        clap_model=clap_id,
        initial_bridge=make_bridge(work / "bridge", dim, dim, 1024, dim),
        device="cpu",
        samples_dir=None,
    )
    return config, images, rng


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def populate_store(
    data_dir: Path, images: np.ndarray, audio: np.ndarray, clip_id: str, clap_id: str
) -> float:
    """Insert synthetic items through ItemStore.add_items (5,000 per transaction)."""
    from bridge.storage.items import ItemStore, NewItem

    started = time.perf_counter()
    store = ItemStore(data_dir / "store.sqlite")
    try:
        for modality, rows, encoder in (("image", images, clip_id), ("audio", audio, clap_id)):
            for start in range(0, len(rows), 5000):
                chunk = rows[start : start + 5000]
                store.add_items(
                    [
                        NewItem(modality, {"n": start + i, "shard": (start + i) % 10}, row, encoder)
                        for i, row in enumerate(chunk)
                    ]
                )
    finally:
        store.close()
    return time.perf_counter() - started


def audio_queries(n: int) -> list[bytes]:
    from media_factory import make_wav_bytes

    return [make_wav_bytes(1.0, 16000, 200.0 + 37.0 * i) for i in range(n)]


# -- measurement ----------------------------------------------------------------------------


def stats(latencies_s: Sequence[float], wall_s: float) -> dict[str, float]:
    ms = np.asarray(latencies_s) * 1000.0
    return {
        "n": float(len(ms)),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "qps": float(len(ms) / wall_s),
    }


def run_threads(call: Callable[[int], Any], total: int, clients: int) -> dict[str, float]:
    """`clients` threads issue `total` calls between them, each one at a time."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    counter = iter(range(total))

    def client() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            try:
                call(i)
            except BaseException as exc:
                errors.append(exc)
                return
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} client error(s), first: {errors[0]!r}")
    return stats(latencies, wall)


def run_interleaved(
    call: Callable[[int], Any], floor_call: Callable[[int], float], total: int
) -> tuple[dict[str, float], dict[str, float]]:
    """One client: for each i, a raw floor search of query i (``floor_call`` answers its
    seconds), then ``call(i)`` timed. Answers (service stats, floor stats)."""
    latencies, floor = [], []
    for i in range(total):
        floor.append(floor_call(i))
        t0 = time.perf_counter()
        call(i)
        latencies.append(time.perf_counter() - t0)
    return stats(latencies, sum(latencies)), stats(floor, sum(floor))


def floor_stats(seconds: Sequence[float]) -> dict[str, float]:
    """A run of raw searches one after another: q/s is 1 / mean."""
    return stats(seconds, sum(seconds))


class FaissFloor:
    """Reference floor of earlier runs: raw FAISS (IndexFlatIP, one OpenMP thread, one query
    at a time) on its own copy of the vectors, in a fresh Python process (``--floor``). The
    verdicts use the service's own index instead (module docstring, own_floor.py): copies of
    one 100k index scan up to 1.7 ms apart on this machine."""

    def __init__(self, vectors: np.ndarray, queries: np.ndarray, workdir: Path, name: str):
        self.vectors, self.queries = workdir / f"{name}-vectors.npy", workdir / f"{name}-q.npy"
        np.save(self.vectors, np.ascontiguousarray(vectors, dtype=np.float32))
        np.save(self.queries, np.ascontiguousarray(queries, dtype=np.float32))

    def measure(self, total: int) -> dict[str, float]:
        command = [sys.executable, __file__, "--floor", str(self.vectors), str(self.queries)]
        done = subprocess.run(
            [*command, str(total)], capture_output=True, text=True, check=True, timeout=900
        )
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def floor_main(vectors_path: str, queries_path: str, total: int) -> int:
    """``--floor``: time ``total`` raw FAISS searches and print their stats as JSON."""
    import faiss

    faiss.omp_set_num_threads(1)
    vectors, queries = np.load(vectors_path), np.load(queries_path)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    for q in queries[:5]:
        index.search(q[None, :], K)  # warm up
    latencies = []
    started = time.perf_counter()
    for i in range(total):
        t0 = time.perf_counter()
        index.search(queries[i % len(queries)][None, :], K)
        latencies.append(time.perf_counter() - t0)
    print(json.dumps(stats(latencies, time.perf_counter() - started)))
    return 0


def encode_request(host: str, spec: dict[str, Any]) -> bytes:
    """One POST (to spec["path"], default /v1/search) as raw HTTP/1.1 bytes (keep-alive),
    built once per query."""
    if "json" in spec:
        body = json.dumps(spec["json"]).encode()
        content_type = "application/json"
    else:
        boundary = "benchboundary7MA4YWxkTrZu0gW"
        parts = []
        for name, value in spec["data"].items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n".encode()
            )
        filename, data, mime = spec["files"]["file"]
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{filename}"\r\nContent-Type: {mime}\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        content_type = f"multipart/form-data; boundary={boundary}"
    head = (
        f"POST {spec.get('path', '/v1/search')} HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """Send one request and read one response (Content-Length framed, as uvicorn sends)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _http_level(
    base: str, requests: list[dict[str, Any]], total: int, clients: int
) -> dict[str, float]:
    """`clients` keep-alive connections, each sending one request at a time.

    A minimal HTTP/1.1 client over asyncio streams (requests encoded up front) so that the
    client's own CPU, which shares this machine's cores with the server, stays small; httpx
    costs about 1 ms of CPU per request, which would be billed to the service.
    """
    host, port = base.removeprefix("http://").split(":")
    encoded = [encode_request(f"{host}:{port}", spec) for spec in requests]
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    connections = [await asyncio.open_connection(host, int(port)) for _ in range(clients)]
    for reader, writer in connections:  # warm each connection
        status, body = await _exchange(reader, writer, encoded[0])
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body[:300]!r}")

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            status, body = await _exchange(reader, writer, encoded[i % len(encoded)])
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {body[:300]!r}")

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(r, w) for r, w in connections))
        wall = time.perf_counter() - started
    finally:
        for _, writer in connections:
            writer.close()
    return stats(latencies, wall)


async def _http_interleaved(
    base: str, requests: list[dict[str, Any]], floors: list[dict[str, Any]], total: int
) -> tuple[dict[str, float], dict[str, float]]:
    """One keep-alive connection: for each i, the server's raw floor search of query i
    (``floors[i]``, a POST to own_floor.FLOOR_PATH; its seconds as the server timed them),
    then search request i, timed here. Answers (service stats, floor stats)."""
    host, port = base.removeprefix("http://").split(":")
    encoded = [encode_request(f"{host}:{port}", spec) for spec in requests]
    encoded_floors = [encode_request(f"{host}:{port}", spec) for spec in floors]
    reader, writer = await asyncio.open_connection(host, int(port))
    latencies: list[float] = []
    floor: list[float] = []
    try:
        for i in range(-1, total):  # i = -1: warm the connection, untimed
            status, floor_body = await _exchange(reader, writer, encoded_floors[i % len(floors)])
            if status != 200:
                raise RuntimeError(f"floor: HTTP {status}: {floor_body[:300]!r}")
            t0 = time.perf_counter()
            status, body = await _exchange(reader, writer, encoded[i % len(encoded)])
            dt = time.perf_counter() - t0
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {body[:300]!r}")
            if i >= 0:
                latencies.append(dt)
                floor.extend(json.loads(floor_body)["seconds"])
    finally:
        writer.close()
    return stats(latencies, sum(latencies)), floor_stats(floor)


def http_floor(
    base: str, spec: dict[str, Any], total: int, split: bool | None = None
) -> dict[str, float]:
    """A run of ``total`` raw searches in the server, on its own index (``split``: as
    own_floor.raw_search_times)."""
    import httpx

    body = {**spec["floor_json"], "queries_path": str(spec["floor"].queries), "total": total}
    body["split"] = split
    response = httpx.post(f"{base}{own_floor.FLOOR_PATH}", json=body, timeout=900)
    response.raise_for_status()
    return floor_stats(response.json()["seconds"])


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop for the client too when it is installed (it is a service dependency)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    config: ServiceConfig,
    extra_env: dict[str, str] | None = None,
    script: list[str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """The benchmark server (``script``, default own_floor.py: `python -m app` plus the floor
    route) on ``config``'s data, on a free loopback port, once /readyz answers 200."""
    port = free_port()
    env = {
        **os.environ,
        **(extra_env or {}),
        "BRIDGE_HOST": "127.0.0.1",
        "BRIDGE_PORT": str(port),
        "BRIDGE_DATA_DIR": str(config.data_dir),
        "BRIDGE_CLIP_MODEL": config.clip_model,
        "BRIDGE_CLAP_MODEL": config.clap_model,
        "BRIDGE_INITIAL_BRIDGE": "none",
        "BRIDGE_DEVICE": config.device,
        "BRIDGE_SEED_SAMPLES": "false",
        "BRIDGE_LOG_LEVEL": "warning",
        "PYTHONPATH": str(REPO),
    }
    # `python -m app` plus the floor route (own_floor.py), so the floor reads the served index
    command = [sys.executable, *(script or [own_floor.__file__])]
    proc = subprocess.Popen(command, cwd=REPO, env=env)
    base = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not become ready")


def log(n: int, message: str) -> None:
    print(f"[{n}] {message}", file=sys.stderr, flush=True)


# -- one collection size --------------------------------------------------------------------


def bench_size(
    args: argparse.Namespace, n: int, models: tuple[str, str], workdir: Path
) -> dict[str, Any]:
    from bridge.encode.encoders import load_encoder
    from bridge.service.facade import BridgeService
    from bridge.types import RetrainRequest

    clip = load_encoder("clip", models[0], "cpu")
    clap = load_encoder("clap", models[1], "cpu")
    data_dir = workdir / f"var-{n}"
    shutil.rmtree(data_dir, ignore_errors=True)
    rng = np.random.default_rng(n)
    images = unit_rows(rng, n, clip.dim)
    audio = unit_rows(rng, args.audio_items, clap.dim)
    result: dict[str, Any] = {"items": n, "audio_items": args.audio_items, "dim": clip.dim}
    result["insert_s"] = populate_store(data_dir, images, audio, clip.model_id, clap.model_id)
    bridge = args.bridge or make_bridge(
        workdir / "bridge", clip.dim, clap.dim, args.hidden, args.shared
    )
    config = ServiceConfig(
        data_dir=data_dir,
        clip_model=models[0],
        clap_model=models[1],
        initial_bridge=Path(bridge),
        device="cpu",
        samples_dir=None,
    )
    t0 = time.perf_counter()
    service = BridgeService.open(config, clip=clip, clap=clap)
    result["open_with_index_builds_s"] = time.perf_counter() - t0
    opened = result["open_with_index_builds_s"]
    log(n, f"inserted in {result['insert_s']:.1f} s, opened in {opened:.1f} s")

    vector_queries = images[rng.choice(n, args.distinct, replace=False)] + 0.05 * unit_rows(
        rng, args.distinct, clip.dim
    )
    vector_queries /= np.linalg.norm(vector_queries, axis=1, keepdims=True)
    wavs = audio_queries(min(args.distinct, 32))
    active = service._active
    assert active is not None
    shared_images = active.checkpoint.project("clip", images)
    audio_vectors = []
    for data in wavs:  # the final query vectors of the audio path, for the floor
        decoded = service._decode(Upload(data, "q.wav", "audio/wav"), "q")
        audio_vectors.append(
            active.checkpoint.project("clap", service._encode("audio", [decoded.media]))[0]
        )
    audio_query_vectors = np.stack(audio_vectors)
    # Text queries (text -> native CLIP image index); their final vectors for the floor.
    texts = [f"a photo of thing number {i}" for i in range(args.distinct)]
    text_query_vectors = clip.encode_text(texts)

    kinds: dict[str, dict[str, Any]] = {
        "vector": {
            "floor": FaissFloor(images, vector_queries, workdir, f"vector-{n}"),
            "floor_json": {"index": "native", "target": "image"},
            "floor_queries": vector_queries,
            "query": lambda i: SearchQuery(
                "image", vector=vector_queries[i % len(vector_queries)].tolist(), space="clip", k=K
            ),
            "http": [
                {"json": {"vector": v.tolist(), "space": "clip", "target": "image", "k": K}}
                for v in vector_queries
            ],
        },
        "audio_file": {
            "floor": FaissFloor(shared_images, audio_query_vectors, workdir, f"audio-{n}"),
            "floor_json": {"index": "shared", "target": "image"},
            "floor_queries": audio_query_vectors,
            "query": lambda i: SearchQuery(
                "image", media=Upload(wavs[i % len(wavs)], "q.wav", "audio/wav"), k=K
            ),
            "http": [
                {
                    "files": {"file": ("q.wav", w, "audio/wav")},
                    "data": {"target": "image", "k": str(K)},
                }
                for w in wavs
            ],
        },
        "text": {
            "floor": FaissFloor(images, text_query_vectors, workdir, f"text-{n}"),
            "floor_json": {"index": "native", "target": "image"},
            "floor_queries": text_query_vectors,
            "query": lambda i: SearchQuery("image", text=texts[i % len(texts)], k=K),
            "http": [{"json": {"text": t, "target": "image", "k": K}} for t in texts],
        },
    }
    rows: list[dict[str, Any]] = []
    for kind, spec in kinds.items():
        stage_sums: dict[str, float] = {}
        for i in range(min(20, args.queries)):  # warm-up + per-stage breakdown
            for stage, ms in service.search(spec["query"](i)).timings_ms.items():
                stage_sums[stage] = stage_sums.get(stage, 0.0) + ms / min(20, args.queries)
        result.setdefault("stages_ms", {})[kind] = stage_sums
        index = own_floor.index_for(service, spec["floor_json"]["index"], "image")
        queries = spec["floor_queries"]
        for clients in args.clients:
            extra = {}
            if clients == 1:
                extra["floor_fresh"] = spec["floor"].measure(args.queries)
                one_thread = own_floor.raw_search_times(index, queries, args.queries, split=False)
                extra["floor_1thread"] = floor_stats(one_thread)
                facade, floor = run_interleaved(
                    lambda i, s=spec: service.search(s["query"](i)),
                    own_floor.one_search(index, queries),
                    args.queries,
                )
            else:
                # the throughput target's floor: raw FAISS single-threaded
                single = own_floor.raw_search_times(index, queries, args.queries, split=False)
                floor = floor_stats(single)
                facade = run_threads(
                    lambda i, s=spec: service.search(s["query"](i)), args.queries, clients
                )
            rows.append(
                {
                    "kind": kind,
                    "via": "facade",
                    "clients": clients,
                    **facade,
                    "floor": floor,
                    **extra,
                }
            )
            log(n, f"{kind} facade c={clients}: {facade['p50_ms']:.2f} ms, {facade['qps']:.0f} q/s")
    service.close()

    if not args.no_http:
        proc, base = start_server(config)
        try:
            for kind, spec in kinds.items():
                floors = [
                    {"path": own_floor.FLOOR_PATH, "json": {**spec["floor_json"], "total": 1,
                                                           "queries": [q.tolist()]}}
                    for q in spec["floor_queries"]
                ]  # fmt: skip
                for clients in args.clients:
                    extra = {}
                    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                        if clients == 1:
                            extra["floor_fresh"] = spec["floor"].measure(args.queries)
                            extra["floor_1thread"] = http_floor(base, spec, args.queries, False)
                            http, floor = runner.run(
                                _http_interleaved(base, spec["http"], floors, args.queries)
                            )
                        else:
                            floor = http_floor(base, spec, args.queries, split=False)
                            http = runner.run(
                                _http_level(base, spec["http"], args.queries, clients)
                            )
                    rows.append(
                        {
                            "kind": kind,
                            "via": "http",
                            "clients": clients,
                            **http,
                            "floor": floor,
                            **extra,
                        }
                    )
                    log(
                        n,
                        f"{kind} http c={clients}: {http['p50_ms']:.2f} ms, {http['qps']:.0f} q/s",
                    )
        finally:
            proc.terminate()
            proc.wait(30)
    result["rows"] = rows

    if not args.no_retrain:
        service = BridgeService.open(config, clip=clip, clap=clap)
        try:
            words = ["red", "loud", "small", "bright"]
            captions = [
                f"caption {i}: a {words[i % 4]} thing {i % 97}" for i in range(args.captions)
            ]
            t0 = time.perf_counter()
            job = service.start_retrain(
                RetrainRequest(
                    captions=captions,
                    train_overrides={"epochs": args.retrain_epochs, "batch_size": 1024},
                )
            )
            while (job := service.get_job(job.id)).status not in ("succeeded", "failed"):
                time.sleep(0.2)
            job_wall = time.perf_counter() - t0
            if job.status != "succeeded":
                raise RuntimeError(f"retrain failed: {job.error}")
            t1 = time.perf_counter()
            service.activate(job.version or "")
            swap_s = time.perf_counter() - t1
            result["retrain"] = {
                "captions": len(captions),
                "epochs": args.retrain_epochs,
                "job_wall_s": job_wall,
                "stages_s": job.metrics.get("timings_s", {}),
                "activate_s": swap_s,
                "reprojected_items": n + args.audio_items,
            }
            log(n, f"retrain {job_wall:.1f} s {job.metrics.get('timings_s')}, swap {swap_s:.3f} s")
        finally:
            service.close()
    shutil.rmtree(data_dir, ignore_errors=True)
    return result


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(results: list[dict[str, Any]]) -> str:
    head = ["items", "query", "via", "clients", "p50 ms", "p99 ms", "q/s"]
    head += ["FAISS floor p50 ms", "floor q/s", "overhead p50 ms"]
    head += ["fresh-process floor p50 ms", "1-thread floor p50 ms"]
    lines = [_row(head), _row(["---:", "---", "---"] + ["---:"] * 9)]
    for res in results:
        for r in res["rows"]:
            f = r["floor"]
            lines.append(
                _row(
                    [
                        f"{res['items']:,}",
                        r["kind"],
                        r["via"],
                        r["clients"],
                        f"{r['p50_ms']:.2f}",
                        f"{r['p99_ms']:.2f}",
                        f"{r['qps']:.0f}",
                        f"{f['p50_ms']:.2f}",
                        f"{f['qps']:.0f}",
                        f"{r['p50_ms'] - f['p50_ms']:.2f}",
                        f"{r['floor_fresh']['p50_ms']:.2f}" if "floor_fresh" in r else "-",
                        f"{r['floor_1thread']['p50_ms']:.2f}" if "floor_1thread" in r else "-",
                    ]
                )
            )
    head = ["items re-projected", "retrain job s", "encode s", "train s"]
    head += ["re-project + index s", "evaluate s", "swap ms"]
    lines += ["", _row(head), _row(["---:"] * 7)]
    for res in results:
        rt = res.get("retrain")
        if rt:
            s = rt["stages_s"]
            lines.append(
                _row(
                    [
                        f"{rt['reprojected_items']:,}",
                        f"{rt['job_wall_s']:.1f}",
                        f"{s.get('encode', 0):.2f}",
                        f"{s.get('train', 0):.1f}",
                        f"{s.get('reproject', 0):.1f}",
                        f"{s.get('evaluate', 0):.2f}",
                        f"{rt['activate_s'] * 1000:.1f}",
                    ]
                )
            )
    return "\n".join(lines)


LATENCY_TARGET_MS = 2.0  # issue 4: p50 overhead of a vector query over the FAISS floor


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 4's two targets per collection size, from the HTTP vector-query rows: p50
    overhead with one client under 2 ms, and throughput with the most clients at least half
    of single-threaded raw FAISS (each against the floor measured right before the cell)."""
    out = []
    for res in results:
        rows = [r for r in res["rows"] if r["kind"] == "vector" and r["via"] == "http"]
        if not rows:
            continue
        one = min(rows, key=lambda r: r["clients"])
        most = max(rows, key=lambda r: r["clients"])
        overhead = one["p50_ms"] - one["floor"]["p50_ms"]
        needed = most["floor"]["qps"] / 2
        out.append(
            {
                "items": res["items"],
                "latency_clients": one["clients"],
                "overhead_p50_ms": overhead,
                "latency_met": overhead < LATENCY_TARGET_MS,
                "throughput_clients": most["clients"],
                "qps": most["qps"],
                "qps_needed": needed,
                "throughput_met": most["qps"] >= needed,
            }
        )
    return out


def targets_table(rows: list[dict[str, Any]]) -> str:
    head = ["items", "vector p50 overhead, HTTP, 1 client (target < 2 ms)"]
    head += ["HTTP q/s, most clients (target: floor q/s / 2)"]
    lines = [_row(head), _row(["---:", "---:", "---:"])]
    for t in rows:
        yes = {True: "met", False: "NOT met"}
        lines.append(
            _row(
                [
                    f"{t['items']:,}",
                    f"{t['overhead_p50_ms']:.2f} ms ({yes[t['latency_met']]})",
                    f"{t['qps']:.0f} at {t['throughput_clients']} clients vs "
                    f"{t['qps_needed']:.0f} needed ({yes[t['throughput_met']]})",
                ]
            )
        )
    return "\n".join(lines)


def write_report(path: Path | None, script: str, argv: list[str] | None, **fields: Any) -> None:
    """A benchmark script's --json report (nothing when ``path`` is None): the command that
    made it (``script`` and its arguments), the CPU, then ``fields``."""
    if path is None:
        return
    command = " ".join([script, *(sys.argv[1:] if argv is None else argv)])
    report = {"command": command, "cpu": cpu_model(), **fields}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def cpu_model() -> str:
    """The CPU's model name and its widest vector extension (FAISS picks kernels by them)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    lines = info.splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if "model name" in ln), "")
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    simd = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "sse"
    return f"{model} ({simd})"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--floor"]:
        return floor_main(argv[1], argv[2], int(argv[3]))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--queries", type=int, default=256, help="queries per measurement")
    parser.add_argument("--distinct", type=int, default=64, help="distinct query vectors")
    parser.add_argument("--audio-items", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=512, help="stand-in encoder width")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--shared", type=int, default=512)
    parser.add_argument("--clip-model", default=None)
    parser.add_argument("--clap-model", default=None)
    parser.add_argument("--bridge", default=None, help="checkpoint folder (default: random)")
    parser.add_argument("--captions", type=int, default=2000)
    parser.add_argument("--retrain-epochs", type=int, default=5)
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--no-retrain", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--table-from", type=Path, default=None, help="print the tables of a saved --json report"
    )
    args = parser.parse_args(argv)
    if args.table_from is not None:
        saved = json.loads(args.table_from.read_text())
        print(table(saved["results"]))
        print()
        print(targets_table(targets(saved["results"])))
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="service-bench-"))
    try:
        if args.clip_model and args.clap_model:
            models = (args.clip_model, args.clap_model)
        else:
            models = build_stand_in_encoders(workdir, args.dim)
        results = [bench_size(args, n, models, workdir) for n in args.sizes]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "cpu": cpu_model(),
            "loadavg_at_end": os.getloadavg(),
            "python": platform.python_version(),
        },
        "encoders": "stand-ins" if not args.clip_model else list(models),
        "k": K,
        "results": results,
        "targets": targets(results),
    }
    print(table(results))
    print()
    print(targets_table(report["targets"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
