"""HTTP layer of modality-bridge (FastAPI). Only parsing, auth, error mapping and formatting
live here; the engine is bridge/ (bridge.service.facade.BridgeService)."""
