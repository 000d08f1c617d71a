r"""Memory and time of decoding one big image for the encoder, with and without the reduction.

    .venv/bin/python scripts/bench/image_decode.py --json docs/benchmarks/image-decode.json

`bridge.encode.media.decode_image` reduces large images before the RGB conversion (JPEG by
decoding at 1/2-1/8 scale, others with a box reduce; the shorter side stays at least
`DECODE_MIN_SIDE`). The baseline is the same function with the reduction off
(`DECODE_MIN_SIDE` set beyond the image). Each measurement runs in a fresh process, so the
peak RSS (ru_maxrss) is that of one decode of a file written beforehand: the child's own
start-up and file read are subtracted.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "scripts" / "bench")]

import service_bench as sb  # noqa: E402

CASES = {  # name -> (format, mode, width, height)
    "PNG RGBA 9400x9400": ("PNG", "RGBA", 9400, 9400),
    "JPEG RGB 8000x6000": ("JPEG", "RGB", 8000, 6000),
}


def _write_case(case: str, path: Path) -> None:
    from PIL import Image

    fmt, mode, width, height = CASES[case]
    buf = io.BytesIO()
    Image.new(mode, (width, height), (250, 250, 250, 255)[: len(mode)]).save(buf, fmt)
    path.write_bytes(buf.getvalue())


def _one(path: Path, reduce: bool) -> dict[str, Any]:
    """Child process: decode the file once; peak RSS above the process's own start-up."""
    import resource
    import time

    import bridge.encode.media as media

    data = path.read_bytes()
    if not reduce:
        media.DECODE_MIN_SIDE = 10**9
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    out = media.decode_image(data)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "file_bytes": len(data),
        "decoded": list(out.size),
        "seconds": seconds,
        "peak_rss_above_setup_mb": (peak - before) / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_one(Path(args.child[0]), args.child[1] == "reduce")))
        return 0
    rows = []
    work = Path(tempfile.mkdtemp(prefix="image-decode-"))
    for case in CASES:
        path = work / case.replace(" ", "_")
        _write_case(case, path)  # here, so that the child's peak is the decode's alone
        cells = {}
        for mode in ("reduce", "full"):
            done = subprocess.run(
                [sys.executable, __file__, "--child", str(path), mode],
                capture_output=True, text=True, check=True, timeout=300,
            )  # fmt: skip
            cells[mode] = json.loads(done.stdout)
        rows.append({"case": case, **cells})
        path.unlink()
    work.rmdir()
    print("| image | decoded for the encoder | MB | s | without reduction: MB | s |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        r, f = row["reduce"], row["full"]
        print(
            f"| {row['case']} ({r['file_bytes']:,} bytes) | {r['decoded'][0]}x{r['decoded'][1]} "
            f"| {r['peak_rss_above_setup_mb']:.0f} | {r['seconds']:.2f} "
            f"| {f['peak_rss_above_setup_mb']:.0f} | {f['seconds']:.2f} |"
        )
    sb.write_report(args.json, "image_decode.py", argv, rows=rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
