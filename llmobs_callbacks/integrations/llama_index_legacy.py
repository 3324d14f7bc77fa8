"""The legacy ``CallbackManager`` adapter's old import path: it lives in ``llama_index/legacy.py``."""

from .llama_index.legacy import LlamaIndexCallbackHandler

__all__ = ["LlamaIndexCallbackHandler"]
