"""llmobs_callbacks: in-process observability for LangChain and LlamaIndex applications."""

from .judge import Judge, Metric, Rubric
from .model import SpanKind
from .obs import LLMObs
from .prepare.pricing import ModelPriceOverride
from .reliability import ConfigurationError

__all__ = ["ConfigurationError", "Judge", "LLMObs", "Metric", "ModelPriceOverride", "Rubric", "SpanKind"]
__version__ = "0.1.0"
