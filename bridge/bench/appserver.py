"""The benchmark server: `python -m app`, run in a child process, plus bench-only routes.

    python -m bridge.bench.appserver [--timeline]
    python -m bridge.bench.appserver --job NAME --job-args JSON --out RESULT.json

The HTTP benchmarks measure the service as it runs (same settings, same code), so this child
runs `python -m app` itself (runpy, as the interpreter's -m does) and, when the app is built
and handed to uvicorn, adds to it what a benchmark needs:

- always ``POST /_bench/floor`` (bridge/bench/floor.py): raw FAISS searches on the index the
  server answers from, on its event loop;
- with ``--timeline``, timestamps along the request path and ``GET /_bench/timeline``
  (bridge/bench/request_timeline.py);
- with ``--job``, instead of serving: an in-process measurement of the app it built
  (`mbridge bench cold-path`, `mbridge bench scan-cache`), whose result goes to ``--out``.

Nothing in bridge/ imports app/ (tests/test_layers.py). The few app objects that the
request-path benchmarks time (the JSON fast path, the search body's parsing) are looked up
by name with `app_object` in this process, after `python -m app` has loaded them; a renamed
one fails here with its name.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `python -m app` sets it, before NumPy

import argparse
import importlib
import json
import runpy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from bridge.service.facade import BridgeService

# --job NAME -> "module:function" taking (the app, the service getter, the job's arguments)
# and answering the result as a JSON-able dict.
JOBS = {
    "cold-path": "bridge.bench.cold_path:measure_app",
    "scan-cache": "bridge.bench.scan_cache:measure_app",
}


class _JobDone(Exception):
    """Raised out of `python -m app` once a job has written its result: nothing to serve."""


def app_object(dotted: str) -> Any:
    """``"app.module"`` or ``"app.module:Name.attr"`` -> that object, from the app modules
    already loaded in this process (bridge/ never imports app/: module docstring)."""
    module_name, _, path = dotted.partition(":")
    module = sys.modules.get(module_name)
    if module is None:
        raise LookupError(f"{module_name} is not loaded: the benchmark server runs python -m app")
    found: Any = module
    for part in path.split(".") if path else []:
        if not hasattr(found, part):
            raise LookupError(f"{dotted}: the app has no such object (renamed?)")
        found = getattr(found, part)
    return found


def keep_opened_services() -> Callable[[], BridgeService]:
    """Record every BridgeService this process opens; answers a getter of the last one (the
    one the app serves), which raises until the app has opened it."""
    from bridge.service.facade import BridgeService

    opened: list[BridgeService] = []
    open_service = BridgeService.open.__func__  # type: ignore[attr-defined]

    def open_and_keep(cls: type[BridgeService], *args: Any, **kwargs: Any) -> BridgeService:
        service: BridgeService = open_service(cls, *args, **kwargs)
        opened.append(service)
        return service

    BridgeService.open = classmethod(open_and_keep)  # type: ignore[method-assign,assignment]

    def current() -> BridgeService:
        if not opened:
            raise LookupError("the app has not opened its service yet")
        return opened[-1]

    return current


def before_serving(hook: Callable[[FastAPI], None]) -> None:
    """Call ``hook(app)`` on the app that `python -m app` hands to uvicorn, before it serves."""
    import uvicorn

    init = uvicorn.Config.__init__

    def config_init(self: uvicorn.Config, app: Any, *args: Any, **kwargs: Any) -> None:
        hook(app)
        init(self, app, *args, **kwargs)

    uvicorn.Config.__init__ = config_init  # type: ignore[method-assign]


def run_job(name: str, job_args: dict[str, Any], out: Path, service: Any) -> Callable[..., None]:
    """The hook of ``--job NAME``: run the measurement, write its result, stop."""
    module_name, _, function = JOBS[name].partition(":")
    measure = getattr(importlib.import_module(module_name), function)

    def hook(app: FastAPI) -> None:
        result = measure(app, service, job_args)
        out.write_text(json.dumps(result) + "\n")
        raise _JobDone

    return hook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.bench.appserver", description=__doc__)
    parser.add_argument("--timeline", action="store_true", help="timestamps on the request path")
    parser.add_argument("--job", choices=sorted(JOBS), help="measure the app instead of serving")
    parser.add_argument("--job-args", default="{}", help="the job's arguments, a JSON object")
    parser.add_argument("--out", type=Path, help="the job's result (JSON)")
    args = parser.parse_args(argv)
    if args.job and args.out is None:
        parser.error("--job needs --out")
    service = keep_opened_services()
    if args.job:
        before_serving(run_job(args.job, json.loads(args.job_args), args.out, service))
    else:
        from bridge.bench.floor import add_floor_route

        hooks: list[Callable[[FastAPI], None]] = [lambda app: add_floor_route(app, service)]
        if args.timeline:
            from bridge.bench.request_timeline import add_timeline

            hooks.insert(0, add_timeline)

        def add_routes(app: FastAPI) -> None:
            for hook in hooks:
                hook(app)

        before_serving(add_routes)
    sys.argv = [sys.argv[0]]  # `python -m app` takes no arguments of ours
    try:
        runpy.run_module("app", run_name="__main__", alter_sys=True)
    except _JobDone:
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
