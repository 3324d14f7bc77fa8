"""LlamaIndex adapter on the instrumentation API: spans and events in, Recorder calls out.

Attach with ``LLMObs.instrument_llama_index()``: one span handler and one event handler on
LlamaIndex's root dispatcher, which every module's dispatcher propagates to. Knows LlamaIndex;
nothing else does.

How LlamaIndex's spans become ours:

* **Tree.** A span's parent is the one LlamaIndex gives (its ``active_span_id`` ContextVar),
  so asyncio tasks and LlamaIndex's own context-copying threads keep the tree. A raw
  ``threading.Thread`` loses that context: its spans start a trace of their own (nothing here
  keeps per-thread "current span" state, so another trace cannot be corrupted).
* **Kinds.** From the instance's class and the method: ``llm`` (``chat``/``complete`` and
  their stream/async variants of an LLM), ``embedding``, ``retriever``, ``reranker``,
  ``tool`` (``BaseTool.call``/``acall`` and a workflow agent's ``call_tool`` step), ``agent``
  (a workflow agent's ``run``), ``chain`` for everything else (query and chat engines,
  synthesizers, ``LLM.predict``, workflow steps…).
* **One logical call, one span.** LlamaIndex nests an LLM method in another
  (``acomplete→complete``, ``stream_chat→stream_complete``), ``retrieve→_retrieve``,
  ``get_query_embedding→_get_query_embedding``, ``call_tool→FunctionTool.acall``. The inner
  span is merged into the outer one (never recorded, its children re-parented, its events
  routed to the outer span), so tokens, cost and call counts are never doubled. Usage is read
  from the outer call's response, else from the inner one's.
* **Streams.** LlamaIndex exits a ``stream_*`` span as soon as the generator is returned; our
  LLM span stays open until the stream's end (``LLM*EndEvent``), error (``ExceptionEvent``),
  early close (``GeneratorExit``, stored as ``ok`` with that reason) or, for a stream nobody
  ever iterates, until the generator is garbage collected. ``ttft_ms`` is the first non-empty
  delta.
* **Lazy streams.** A streaming synthesizer returns a generator that calls the LLM only when
  the app iterates it, after every span of the query has exited, so LlamaIndex gives that LLM
  call no parent. We remember the frames of generators returned by spans and, for a span
  LlamaIndex starts without a parent, look up the calling stack for one: the streamed LLM call
  joins the query's trace (and its declared session/user/prompt).
* **Inside LangChain.** A LlamaIndex call made inside a LangChain/LangGraph run that this
  store records (a node or tool calling a query engine) joins that run's trace, as its child.
* **Declared context** comes from ``instrument_tags({...})`` and ``LLMObs.context(...)``:
  ``prompt_name``, ``prompt_version``, ``session_id``, ``user_id`` and ``tags``; other keys are
  stored as attributes. A prompt template passed to ``LLM.predict``/``stream``/
  ``structured_predict`` (what ``LLMPredictStartEvent.template`` carries) gives a derived
  prompt version (its ``prompt_type`` as the name) unless a version was declared.

LlamaIndex swallows handler exceptions silently; every entry point here is guarded, counts
failures in ``Diagnostics`` and logs once. The hot path does dict operations and attribute
reads only: payloads are handed to the recorder as they are and serialised on the processor
thread.

Modules: ``tracer`` (spans and events → Recorder calls), ``handlers`` (what the dispatcher calls,
and the handle ``instrument_llama_index`` returns), ``streams`` (generators spans returned),
``payloads`` (LlamaIndex objects → span payloads, shared with ``legacy``, the adapter for the
``CallbackManager`` API).
"""

from .handlers import LlamaIndexEventHandler, LlamaIndexInstrumentation, LlamaIndexSpanHandler
from .payloads import FRAMEWORK, ChatMessages, ToolError
from .streams import GeneratorLinks
from .tracer import LlamaIndexTracer

__all__ = [
    "FRAMEWORK",
    "ChatMessages",
    "GeneratorLinks",
    "LlamaIndexEventHandler",
    "LlamaIndexInstrumentation",
    "LlamaIndexSpanHandler",
    "LlamaIndexTracer",
    "ToolError",
]
