"""`python -m app`: start the HTTP service with uvicorn, configured by BRIDGE_* variables.

Exit codes: 0 after a clean shutdown, 1 when the engine fails to load, 2 when the settings
are invalid or unsafe (a non-loopback BRIDGE_HOST without BRIDGE_ADMIN_KEY).
"""

from __future__ import annotations

import os

# One OpenBLAS thread for NumPy, set before anything imports it (OpenBLAS reads this once,
# at load). The service parallelises across requests and splits big scans itself; NumPy's
# products here are small (audio features), and OpenBLAS's second thread busy-waits after
# each, taking the core a split scan's second slice needs (docs/benchmarks.md, "OpenBLAS
# threads and split scans").
# A value set in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import logging
import sys

# Progress bars (transformers' "Loading weights", hub downloads) only on a terminal: in a
# container's or a service manager's log each is a line of carriage returns. Read once, when
# huggingface_hub loads; a value set in the environment wins.
if not sys.stderr.isatty():
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from pydantic import ValidationError

from app.settings import Settings, bind_refusal, format_validation_error, load_settings
from bridge.memory import limit_arenas

EXIT_LOAD_FAILED = 1
EXIT_BAD_SETTINGS = 2

logger = logging.getLogger("app")


def _help_text() -> str:
    lines = []
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default is None else str(default)
        doc = f"  {field.description}" if field.description else ""
        lines.append(f"  BRIDGE_{name.upper():<24} default {shown}{doc}")
    return "environment variables:\n" + "\n".join(lines)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # FAISS's loader logs at INFO every per-SIMD module it fails to import, which reads like
    # an error but is how a FAISS 1.15 wheel always loads; the engine logs the level in use.
    # BRIDGE_LOG_LEVEL=debug shows them.
    if logging.root.level > logging.DEBUG:
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="Serve cross-modal search (images, audio, text) over HTTP.",
        epilog=_help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)

    try:
        settings = load_settings()
    except ValidationError as exc:
        print(format_validation_error(exc), file=sys.stderr)
        return EXIT_BAD_SETTINGS
    refusal = bind_refusal(settings)
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return EXIT_BAD_SETTINGS

    configure_logging(settings.log_level)
    # Before uvicorn's and the engine's threads allocate; workers inherit MALLOC_ARENA_MAX.
    limit_arenas(settings.malloc_arenas)
    if settings.admin_key is not None and len(settings.admin_key.get_secret_value()) < 16:
        logger.warning("BRIDGE_ADMIN_KEY is shorter than 16 characters; use a long random key")

    import uvicorn

    from app.main import create_app

    if settings.workers > 1:
        # Replicas in one server: each worker process opens the engine from the environment.
        logger.info(
            "serving on http://%s:%d with %d worker processes (data dir %s)",
            settings.host,
            settings.port,
            settings.workers,
            settings.data_dir,
        )
        uvicorn.run(
            "app.main:create_app_from_environment",
            factory=True,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            workers=settings.workers,
            timeout_graceful_shutdown=10,
        )
        return 0

    server: uvicorn.Server | None = None

    def stop(_: BaseException) -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_load_failure=stop)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        workers=1,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    logger.info(
        "serving on http://%s:%d (data dir %s)", settings.host, settings.port, settings.data_dir
    )
    server.run()
    if app.state.holder.error is not None:
        print(f"the engine failed to start: {app.state.holder.error}", file=sys.stderr)
        return EXIT_LOAD_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
