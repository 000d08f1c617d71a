"""modality-bridge engine: connect frozen contrastive spaces with C-MCR and search them.

Heavy libraries (torch, transformers, faiss) are imported inside the modules that use them,
so `import bridge` and `mbridge --help` stay fast.
"""

from bridge.errors import BridgeError

__version__ = "0.1.0"
__all__ = ["BridgeError", "__version__"]
