"""Use cases over the layers: ingest, search and routing, versions, retrain."""

from bridge.service.facade import BridgeService

__all__ = ["BridgeService"]
