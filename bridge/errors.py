"""Domain errors. app/ maps each class to one HTTP status in a single place.

Every error message says what was wrong and, where it helps, what was expected.
"""


class BridgeError(Exception):
    """Base class of every error the engine raises on purpose."""


class InvalidInputError(BridgeError):
    """A parameter or array is malformed (wrong dtype, rank, shape, NaN...). HTTP 422."""


class MediaDecodeError(InvalidInputError):
    """A file claims a supported type but cannot be decoded. HTTP 422."""


class UnsupportedMediaError(BridgeError):
    """The file is not an image or audio format we read, or the wrong modality. HTTP 415."""


class PayloadTooLargeError(BridgeError):
    """The upload exceeds the size or audio-duration limit. HTTP 413."""


class NotFoundError(BridgeError):
    """An item, job, version or file does not exist. HTTP 404."""


class ConflictError(BridgeError):
    """The request conflicts with current state (e.g. activating an unready version). HTTP 409."""


class BackendUnavailableError(BridgeError):
    """A server the engine depends on (the Milvus vector backend) did not answer; the
    request may succeed later. HTTP 503 with Retry-After."""

    dependency = "vector backend"  # what the 503's message says is unavailable


class StoreUnavailableError(BackendUnavailableError):
    """The item store's database server (PostgreSQL) did not answer."""

    dependency = "item store"


class CheckpointError(BridgeError):
    """A bridge checkpoint folder is missing files or does not fit the data."""


class ModelLoadError(BridgeError):
    """An encoder could not be loaded from the given hub id or folder."""
