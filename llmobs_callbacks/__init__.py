"""llmobs_callbacks: in-process observability for LangChain and LlamaIndex applications."""

from .model import SpanKind
from .obs import LLMObs
from .pricing import ModelPriceOverride

__all__ = ["LLMObs", "ModelPriceOverride", "SpanKind"]
__version__ = "0.1.0"
