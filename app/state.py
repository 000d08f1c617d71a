"""The engine as the running app sees it: loading, ready, or failed.

The lifespan opens the BridgeService in a worker thread so /healthz answers at once and
/readyz says 503 until the models and indexes are loaded.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Literal

from app.errors import BACKEND_RETRY_AFTER_SECONDS, ServiceUnavailableError

if TYPE_CHECKING:
    from bridge.service import BridgeService

# waiting: the vector backend did not answer at start; the loader retries (app/main.py).
Phase = Literal["loading", "waiting", "ready", "failed", "closed"]


class ServiceHolder:
    """Holds the one BridgeService of a process; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._service: BridgeService | None = None
        self._phase: Phase = "loading"
        self._error: str | None = None

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def error(self) -> str | None:
        return self._error

    def set_ready(self, service: BridgeService) -> None:
        with self._lock:
            self._service = service
            self._phase = "ready"

    def set_waiting(self, error: str) -> None:
        with self._lock:
            self._error = error
            self._phase = "waiting"

    def set_failed(self, error: str) -> None:
        with self._lock:
            self._error = error
            self._phase = "failed"

    def take_for_close(self) -> BridgeService | None:
        """Detach the service (so no new request gets it) and return it for closing."""
        with self._lock:
            service, self._service = self._service, None
            self._phase = "closed"
            return service

    def peek(self) -> BridgeService | None:
        return self._service

    def require(self) -> BridgeService:
        """The service, or ServiceUnavailableError (503) saying why there is none."""
        service = self._service
        if service is not None:
            return service
        if self._phase == "failed":
            raise ServiceUnavailableError(f"the engine failed to start: {self._error}")
        if self._phase == "closed":
            raise ServiceUnavailableError("the service is shutting down")
        if self._phase == "waiting":
            raise ServiceUnavailableError(
                f"waiting for the vector backend: {self._error}",
                headers={"Retry-After": str(BACKEND_RETRY_AFTER_SECONDS)},
            )
        raise ServiceUnavailableError(
            "the engine is still loading models and indexes; retry shortly (see /readyz)",
            headers={"Retry-After": "2"},
        )
