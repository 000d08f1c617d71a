"""A long mixed load: `mbridge bench soak [--minutes N] [--clients 16] [--items N]`.

One server process (`python -m app` on a synthetic collection: bridge/bench/standins.py, N
512-d images and 1,000 sounds, stand-in encoders and a random bridge) under `clients`
keep-alive HTTP clients for `minutes`, each looping over a mix:

- 55% JSON text searches, target image or audio (native CLIP and CLAP);
- 20% file searches: a PNG for audio and a WAV for images (the two bridged directions);
- 12.5% ingest of a PNG or a WAV (POST /v1/items);
- 12.5% deletes of an item the same client added (an ingest when it has none left), so the
  collection keeps its size and memory growth is the server's own, not the data's.

Halfway through, one retrain (POST /v1/admin/retrain, a small caption list) runs, and its
version is activated when ready (`--no-retrain`: none). `--malloc-arenas N` sets the
server's BRIDGE_MALLOC_ARENAS (0: glibc's default), to compare the heap's growth.
Per minute: requests, p50/p99 latency, 4xx and 5xx counts,
the net items added, and the server's resident memory (VmRSS, sampled every second): its
value at the minute's end and its highest sample. The verdict lines check the targets: no
5xx, RSS growth after minute 5 under 10% (minute ends; and the highest sample, which catches a
retrain's brief peak), and the p99 of the last 5 minutes within 1.25x of minutes 5-10 (needs
at least 15 minutes); and the RSS slope after minute 5 (MB a minute, least squares).
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.bench import httpclient
from bridge.bench.report import bench_parser, format_table, write_report
from bridge.bench.server import start_server, stop
from bridge.bench.standins import sine_wav_bytes, synthetic_service

ADMIN_KEY = "soak-benchmark-admin-key"
CAPTIONS = [f"{a} {b}" for a in ("a dog", "rain", "a piano", "an engine") for b in ("far", "near")]
WORDS = ("dog", "rain", "piano", "engine", "bird", "crowd", "siren", "wave")
RSS_SAMPLE_SECONDS = 1.0  # often enough to see a retrain's peak of a second or two


def png_bytes(seed: int, side: int = 48) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def status_mb(field: str = "VmRSS", pid: int | str = "self") -> float:
    """A memory field of /proc/PID/status (VmRSS, VmHWM) in MB; NaN where there is none."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Minute:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    items_added: int = 0  # ingests answered 201 less deletes answered 204

    def record(self, status: int, seconds: float) -> None:
        self.latencies.append(seconds)
        self.statuses[status] = self.statuses.get(status, 0) + 1


class Soak:
    def __init__(self, base: str, minutes: float, seed: int = 0) -> None:
        self.base = base
        self.host = base.removeprefix("http://")
        self.deadline = time.monotonic() + minutes * 60
        self.begun = time.monotonic()
        self.minutes: list[Minute] = []
        self.rng = random.Random(seed)
        self.pngs = [png_bytes(i) for i in range(32)]
        self.wavs = [sine_wav_bytes(0.5, 16000, 200.0 + 37.0 * i) for i in range(32)]
        self.retrain: dict[str, Any] = {}

    def minute(self) -> Minute:
        index = int((time.monotonic() - self.begun) // 60)
        while len(self.minutes) <= index:
            self.minutes.append(Minute())
        return self.minutes[index]

    def request(self, own: list[str]) -> tuple[dict[str, Any], str]:
        """The next request of a client's mix (spec, kind); `own`: ids it added."""
        roll = self.rng.random()
        if roll < 0.55:
            words = self.rng.sample(WORDS, 2)
            target = self.rng.choice(("image", "audio"))
            return {"json": {"text": f"a {words[0]} and a {words[1]}", "target": target}}, "text"
        if roll < 0.75:
            if self.rng.random() < 0.5:
                media, target = ("q.png", self.rng.choice(self.pngs), "image/png"), "audio"
            else:
                media, target = ("q.wav", self.rng.choice(self.wavs), "audio/wav"), "image"
            return {"data": {"target": target, "k": "10"}, "files": {"file": media}}, "file"
        if roll < 0.875 or not own:
            if self.rng.random() < 0.5:
                media = ("i.png", self.rng.choice(self.pngs), "image/png")
            else:
                media = ("i.wav", self.rng.choice(self.wavs), "audio/wav")
            return {"path": "/v1/items", "data": {}, "files": {"file": media}}, "ingest"
        item = own.pop(self.rng.randrange(len(own)))
        return {"method": "DELETE", "path": f"/v1/items/{item}"}, "delete"

    async def client(self) -> None:
        import json

        reader, writer = await asyncio.open_connection(*httpclient.host_port(self.base))
        own: list[str] = []
        try:
            while time.monotonic() < self.deadline:
                spec, kind = self.request(own)
                started = time.perf_counter()
                status, body = await httpclient.exchange(
                    reader, writer, httpclient.encode_request(self.host, spec)
                )
                minute = self.minute()
                minute.record(status, time.perf_counter() - started)
                if kind == "ingest" and status == 201:
                    own.append(json.loads(body)["id"])
                    minute.items_added += 1
                elif kind == "delete" and status == 204:
                    minute.items_added -= 1
        finally:
            writer.close()

    async def retrain_once(self, at_seconds: float) -> None:
        import json

        await asyncio.sleep(at_seconds)
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        reader, writer = await asyncio.open_connection(*httpclient.host_port(self.base))
        try:
            body = {"captions": CAPTIONS, "train_overrides": {"epochs": 3}, "activate": True}
            spec = {"path": "/v1/admin/retrain", "json": body, "headers": admin}
            started = time.monotonic()
            status, answer = await httpclient.exchange(
                reader, writer, httpclient.encode_request(self.host, spec)
            )
            self.retrain = {"status": status, "answer": json.loads(answer)}
            job = self.retrain["answer"].get("job_id")
            while job and time.monotonic() < self.deadline:
                poll = {"method": "GET", "path": f"/v1/admin/jobs/{job}", "headers": admin}
                status, answer = await httpclient.exchange(
                    reader, writer, httpclient.encode_request(self.host, poll)
                )
                state = json.loads(answer)
                if state.get("status") in ("succeeded", "failed"):
                    self.retrain |= {"job": state, "seconds": time.monotonic() - started}
                    return
                await asyncio.sleep(1)
        finally:
            writer.close()

    async def run(self, clients: int, pid: int, retrain: bool = True) -> list[list[float]]:
        """Run the load; answers the server's RSS (MB), sampled every RSS_SAMPLE_SECONDS,
        grouped by minute."""
        rss: list[list[float]] = []

        async def sample() -> None:
            while time.monotonic() < self.deadline:
                await asyncio.sleep(min(RSS_SAMPLE_SECONDS, self.deadline - time.monotonic()))
                minute = int((time.monotonic() - self.begun) // 60)
                while len(rss) <= minute:
                    rss.append([])
                rss[minute].append(status_mb(pid=pid))

        half = (self.deadline - time.monotonic()) / 2
        retraining = [self.retrain_once(half)] if retrain else []
        await asyncio.gather(*(self.client() for _ in range(clients)), *retraining, sample())
        return rss


def summarise(minutes: list[Minute], rss: list[list[float]]) -> list[dict[str, Any]]:
    rows = []
    for i, m in enumerate(minutes):
        ms = np.asarray(m.latencies) * 1000 if m.latencies else np.array([np.nan])
        rows.append(
            {
                "minute": i + 1,
                "requests": len(m.latencies),
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
                "4xx": sum(n for s, n in m.statuses.items() if 400 <= s < 500),
                "5xx": sum(n for s, n in m.statuses.items() if s >= 500),
                "statuses": {str(s): n for s, n in sorted(m.statuses.items())},
                "items_added": m.items_added,
                # The minute's last sample, and its highest (a retrain's brief peak).
                "rss_mb": rss[i][-1] if i < len(rss) and rss[i] else float("nan"),
                "rss_peak_mb": max(rss[i]) if i < len(rss) and rss[i] else float("nan"),
            }
        )
    return rows


def verdict(rows: list[dict[str, Any]], minutes: list[Minute]) -> dict[str, Any]:
    """The soak targets, where the run is long enough to judge them."""
    out: dict[str, Any] = {"5xx": sum(r["5xx"] for r in rows)}
    if len(rows) > 5:
        base = rows[4]["rss_mb"]
        out["rss_growth_after_minute_5"] = max(r["rss_mb"] for r in rows[5:]) / base - 1
        peaks = [r["rss_peak_mb"] for r in rows[5:] if np.isfinite(r["rss_peak_mb"])]
        if peaks:
            out["rss_peak_growth_after_minute_5"] = max(peaks) / base - 1
        sampled = [(r["minute"], r["rss_mb"]) for r in rows[4:] if np.isfinite(r["rss_mb"])]
        if len(sampled) >= 2:
            x, y = np.asarray(sampled).T
            out["rss_mb_per_minute_after_minute_5"] = float(np.polyfit(x, y, 1)[0])
    if len(rows) >= 15:

        def p99(chunk: list[Minute]) -> float:
            return float(np.percentile([x for m in chunk for x in m.latencies], 99) * 1000)

        out["p99_last5_over_minutes_5_10"] = p99(minutes[-5:]) / p99(minutes[5:10])
    return out


def main(argv: list[str]) -> int:
    parser = bench_parser("soak", __doc__ or "")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--no-retrain", action="store_true", help="no retrain halfway")
    parser.add_argument(
        "--malloc-arenas", type=int, default=None, help="the server's BRIDGE_MALLOC_ARENAS"
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    try:
        config, _, _ = synthetic_service(work, args.items)
        env = {"BRIDGE_ADMIN_KEY": ADMIN_KEY}
        if args.malloc_arenas is not None:
            env["BRIDGE_MALLOC_ARENAS"] = str(args.malloc_arenas)
        proc, base = start_server(config, env, initial_bridge=str(config.initial_bridge))
        try:
            soak = Soak(base, args.minutes)
            rss = httpclient.run(soak.run(args.clients, proc.pid, not args.no_retrain))
        finally:
            stop(proc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = summarise(soak.minutes, rss)
    print(render(rows))
    result = verdict(rows, soak.minutes)
    retrain = soak.retrain.get("job", {})
    print(f"retrain: {retrain.get('status')} in {soak.retrain.get('seconds', float('nan')):.1f} s")
    for name, value in result.items():
        print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}")
    write_report(args.json, "soak", argv, minutes=rows, verdict=result, retrain=soak.retrain,
                 clients=args.clients, items=args.items, malloc_arenas=args.malloc_arenas,
                 server_settings=settings_from_environment())  # fmt: skip
    return 0


def settings_from_environment() -> dict[str, str]:
    """The BRIDGE_* and MALLOC_* variables the server inherited from this run's environment
    (BRIDGE_KEEP_PREVIOUS_SECONDS=600 mbridge bench soak ...), secrets left out."""
    secret = ("KEY", "URL", "PASSWORD", "TOKEN")
    return {
        name: value
        for name, value in sorted(os.environ.items())
        if name.startswith(("BRIDGE_", "MALLOC_")) and not any(s in name for s in secret)
    }


def render(rows: list[dict[str, Any]]) -> str:
    headers = ["minute", "requests", "p50 ms", "p99 ms", "4xx", "5xx", "items added", "RSS MB"]
    headers.append("peak RSS MB")
    keys = ["minute", "requests", "p50_ms", "p99_ms", "4xx", "5xx", "items_added", "rss_mb"]
    keys.append("rss_peak_mb")
    return format_table(headers, [[r[k] for k in keys] for r in rows])
