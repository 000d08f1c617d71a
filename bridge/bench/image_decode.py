"""Memory and time of decoding one big image for the encoder, with and without the reduction.

    mbridge bench image-decode --json docs/benchmarks/image-decode.json

`bridge.encode.media.decode_image` reduces large images before the RGB conversion (JPEG by
decoding at 1/2-1/8 scale, others with a box reduce; the shorter side stays at least
`DECODE_MIN_SIDE`). The baseline is the same function with the reduction off
(`DECODE_MIN_SIDE` set beyond the image). Each measurement runs in a fresh process, so the
peak RSS (VmHWM) is that of one decode of a file written beforehand: the child's own
start-up and file read are subtracted.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bridge.bench.report import bench_parser, markdown_table, write_report

CASES = {  # name -> (format, mode, width, height)
    "PNG RGBA 9400x9400": ("PNG", "RGBA", 9400, 9400),
    "JPEG RGB 8000x6000": ("JPEG", "RGB", 8000, 6000),
}


def write_case(case: str, path: Path, scale: float = 1.0) -> None:
    """The image of ``case`` (its sides times ``scale``), encoded, at ``path``."""
    from PIL import Image

    fmt, mode, width, height = CASES[case]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    buf = io.BytesIO()
    Image.new(mode, size, (250, 250, 250, 255)[: len(mode)]).save(buf, fmt)
    path.write_bytes(buf.getvalue())


def peak_rss_kb() -> int:
    """This process's own peak RSS in kB: VmHWM, not ru_maxrss, which on Linux starts at the
    peak of the process that spawned it (a parent that built a 9400^2 image hid a smaller
    child's whole decode)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return int(status.split("VmHWM:")[1].split()[0])


def decode_once(path: Path, reduce: bool) -> dict[str, Any]:
    """In a fresh process: decode the file once; peak RSS above the process's own start-up."""
    import time

    import bridge.encode.media as media

    data = path.read_bytes()
    if not reduce:
        media.DECODE_MIN_SIDE = 10**9
    before = peak_rss_kb()
    started = time.perf_counter()
    out = media.decode_image(data)
    seconds = time.perf_counter() - started
    peak = peak_rss_kb()
    return {
        "file_bytes": len(data),
        "decoded": list(out.size),
        "seconds": seconds,
        "peak_rss_above_setup_mb": (peak - before) / 1024,
    }


def main(argv: list[str]) -> int:
    parser = bench_parser("image-decode", __doc__)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="scale the images' sides (a quick run: 0.1)"
    )
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="image-decode-") as work:
        for case in CASES:
            path = Path(work) / case.replace(" ", "_")
            write_case(case, path, args.scale)  # here: the child's peak is the decode's alone
            cells = {}
            for mode in ("reduce", "full"):
                done = subprocess.run(
                    [sys.executable, "-m", "bridge.bench.image_decode", str(path), mode],
                    capture_output=True, text=True, check=True, timeout=300,
                )  # fmt: skip
                cells[mode] = json.loads(done.stdout)
            rows.append({"case": case, **cells})
            path.unlink()
    head = ["image", "decoded for the encoder", "MB", "s", "without reduction: MB", "s"]
    cells_out = []
    for row in rows:
        r, f = row["reduce"], row["full"]
        cells_out.append(
            [
                f"{row['case']} ({r['file_bytes']:,} bytes)",
                f"{r['decoded'][0]}x{r['decoded'][1]}",
                f"{r['peak_rss_above_setup_mb']:.0f}",
                f"{r['seconds']:.2f}",
                f"{f['peak_rss_above_setup_mb']:.0f}",
                f"{f['seconds']:.2f}",
            ]
        )
    print(markdown_table(head, ["---", "---"] + ["---:"] * 4, cells_out))
    write_report(args.json, "image-decode", argv, rows=rows)
    return 0


if __name__ == "__main__":  # the child: python -m bridge.bench.image_decode FILE reduce|full
    print(json.dumps(decode_once(Path(sys.argv[1]), sys.argv[2] == "reduce")))
