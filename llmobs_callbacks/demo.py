"""A small support bot traced end to end, on LangChain's shipped fake models (no network),
and the seed's case study: a simulated day of its traffic with a costly prompt update.

Retrieval-augmented answers with two prompt versions, a tool call, a LangGraph router that
escalates low-confidence requests to human review, and an occasional failing tool.

``simulate()`` replays a day through the real handler with a ``SimulatedClock`` (spans carry the
simulated times, so a day runs in seconds): prompt v1 for most of it, then v2, which retrieves
twice the context (tokens per request ×2, cost per request ×2.3 — v2 also answers at length)
and escalates ~25 % of requests to human review instead of ~10 %; fewer of its users click
thumbs up (feedback is stored as scores). ``Scenario(v2_regresses=False)`` is the control: v2
behaves like v1.

When llama-index-core is installed, the human-review step also drafts a reply for the agent
with a small LlamaIndex app (a ``VectorStoreIndex`` of past tickets and a query engine, on
LlamaIndex's ``MockLLM``/``MockEmbedding`` reporting gpt-4o-mini usage): its spans join the
request's trace, so the report's shape and totals stay per request.
"""

from __future__ import annotations

import random
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.tools import tool
from langchain_core.vectorstores import InMemoryVectorStore
from typing_extensions import TypedDict

from .obs import LLMObs

KNOWLEDGE = [
    ("refunds", "Refunds are issued within 5 business days to the original payment method."),
    ("shipping", "Standard shipping takes 3-5 days; express shipping takes 1-2 days."),
    ("passwords", "Reset your password from the login page with 'Forgot password'."),
    ("plans", "The Pro plan costs $20 per month and includes priority support."),
    ("cancel", "You can cancel at any time from Settings > Billing; no fee applies."),
    ("warranty", "Hardware has a two-year warranty covering manufacturing defects."),
]
QUESTIONS = [
    "How long do refunds take?",
    "When will my express order arrive?",
    "Where is my order?",
    "I forgot my password, what now?",
    "How much is the Pro plan?",
    "Can I cancel my subscription?",
    "Is my broken speaker under warranty?",
    "I want to speak to a manager about a double charge!",
]
PROMPTS = {
    "v1": ChatPromptTemplate.from_messages(
        [
            ("system", "You are a support assistant. Answer briefly using the context.\n{context}"),
            ("human", "{question}"),
        ]
    ),
    "v2": ChatPromptTemplate.from_messages(
        [
            (
                "system",
                "You are a friendly, thorough support assistant. Quote the context, explain every "
                "step, and offer follow-up help.\nContext:\n{context}",
            ),
            ("human", "{question}"),
        ]
    ),
}


class DemoChatModel(GenericFakeChatModel):
    """A fake chat model that reports OpenAI-style usage so cost is priced like gpt-4o-mini.

    With ``streaming=True`` it streams word by word (LangChain then streams it even under
    ``invoke``), the last chunk carrying usage, so traces get a time to first token. The
    simulation's clock hooks: ``on_first_token`` before the first word, ``on_generate`` when the
    answer is complete (both called with the whole answer).
    """

    model_name: str = "gpt-4o-mini"
    streaming: bool = False
    on_first_token: Callable[[AIMessage], None] | None = None
    on_generate: Callable[[AIMessage], None] | None = None

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        result = super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)
        for hook in (self.on_first_token, self.on_generate):
            if hook is not None:
                hook(result.generations[0].message)
        return result

    def _stream(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        result = GenericFakeChatModel._generate(self, messages, stop=stop, run_manager=run_manager, **kwargs)
        message = result.generations[0].message
        if self.on_first_token is not None:
            self.on_first_token(message)
        words = re.split(r"(\s)", str(message.content))
        for i, word in enumerate(words):
            last = i == len(words) - 1
            chunk = ChatGenerationChunk(
                message=AIMessageChunk(
                    content=word,
                    id=message.id,
                    usage_metadata=message.usage_metadata if last else None,
                    response_metadata=message.response_metadata if last else {},
                )
            )
            if run_manager is not None:
                run_manager.on_llm_new_token(word, chunk=chunk)
            yield chunk
        if self.on_generate is not None:
            self.on_generate(message)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params.update(ls_provider="openai", ls_model_name=self.model_name)
        return params


def _answers(rng: random.Random, version: str, input_factor: float = 2.0, output_factor: float = 2.0) -> Any:
    """Answers with usage; v2's prompt and answer are ``input_factor``/``output_factor`` × v1's."""
    v2 = version == "v2"
    while True:
        words = round(rng.randint(20, 40) * (output_factor if v2 else 1))
        prompt_tokens = round(rng.randint(180, 260) * (input_factor if v2 else 1))
        cached = rng.choice([0, 0, 128])
        text = " ".join(
            rng.choice(["Sure", "the", "refund", "order", "plan", "help", "thanks"]) for _ in range(words)
        )
        yield AIMessage(
            content=text,
            usage_metadata={
                "input_tokens": prompt_tokens,
                "output_tokens": words * 2,
                "total_tokens": prompt_tokens + words * 2,
                "input_token_details": {"cache_read": cached},
            },
            response_metadata={"model_name": "gpt-4o-mini-2024-07-18"},
        )


class ScoredRetriever(BaseRetriever):
    """Keeps similarity scores in ``Document.metadata['score']`` (VectorStoreRetriever drops them)."""

    store: InMemoryVectorStore
    k: int = 2
    on_retrieve: Callable[[], None] | None = None  # the simulation's clock: search latency

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        if self.on_retrieve is not None:
            self.on_retrieve()
        docs = []
        for doc, score in self.store.similarity_search_with_score(query, k=self.k):
            docs.append(
                Document(id=doc.id, page_content=doc.page_content, metadata={**doc.metadata, "score": score})
            )
        return docs


@tool
def lookup_order(order_id: str) -> str:
    """Look up the status of an order."""
    if order_id.endswith("13"):
        raise ValueError(f"order {order_id} not found")
    return f"order {order_id}: shipped"


class RouterState(TypedDict, total=False):
    question: str
    version: str
    order_id: str
    confidence: float  # the classifier's confidence; below CONFIDENCE_FLOOR a human reviews
    answer: str
    suggestion: str  # the RAG chain's answer, for the human reviewer
    draft: str


CONFIDENCE_FLOOR = 0.5


PAST_TICKETS = [
    ("t-101", "Customer was charged twice; we refunded the duplicate charge within 2 days."),
    ("t-102", "Customer asked for a manager about a late delivery; we offered express reshipping."),
    ("t-103", "Customer disputed a subscription charge after cancelling; we refunded the last month."),
    ("t-104", "Customer could not reset the password; we unlocked the account manually."),
]


def llama_index_drafter(
    seed: int = 7, on_complete: Callable[[int], None] | None = None
) -> Callable[[str], str] | None:
    """A LlamaIndex query engine drafting a reply from past tickets, or None without llama-index.

    Shipped mocks only: ``MockLLM`` and ``MockEmbedding`` subclasses, so it never needs a
    network; the LLM reports OpenAI-shaped usage for gpt-4o-mini, so calls are priced.
    ``on_complete`` gets each completion's output tokens (the simulation's clock uses it).
    """
    try:
        from llama_index.core import Document as LIDocument
        from llama_index.core import VectorStoreIndex
        from llama_index.core.base.llms.types import CompletionResponse, LLMMetadata
        from llama_index.core.embeddings import MockEmbedding
        from llama_index.core.llms import MockLLM
        from llama_index.core.llms.callbacks import llm_completion_callback
    except ImportError:
        return None

    rng = random.Random(seed)

    class DemoDraftLLM(MockLLM):
        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="gpt-4o-mini")

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
            words = rng.randint(25, 45)
            text = "Draft: apologise, confirm the charge and offer a refund. " + "details " * words
            usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": words + 12}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            if on_complete is not None:
                on_complete(usage["completion_tokens"])
            return CompletionResponse(
                text=text.strip(), raw={"model": "gpt-4o-mini-2024-07-18", "usage": usage}
            )

    class WordEmbedding(MockEmbedding):
        def _vector(self, text: str) -> list[float]:
            vector = [0.0] * self.embed_dim
            for word in text.lower().split():
                vector[sum(map(ord, word)) % self.embed_dim] += 1.0
            return vector

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._vector(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._vector(text)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._vector(query)

    docs = [LIDocument(text=text, id_=key, metadata={"ticket": key}) for key, text in PAST_TICKETS]
    index = VectorStoreIndex.from_documents(docs, embed_model=WordEmbedding(embed_dim=32))
    engine = index.as_query_engine(llm=DemoDraftLLM(), similarity_top_k=2)

    def draft(question: str) -> str:
        return str(engine.query(question))

    return draft


def build_app(
    retriever: BaseRetriever | Mapping[str, BaseRetriever],
    llms: Mapping[str, BaseChatModel],
    drafter: Callable[[str], str] | None = None,
    suggest_for_review: bool = False,
) -> Any:
    """The support bot: a LangGraph router in front of a RAG chain, an order tool and humans
    (who get a reply drafted by ``drafter``, the LlamaIndex app, when there is one, and with
    ``suggest_for_review`` the RAG chain's answer as a suggestion).

    ``retriever`` may be one per prompt version (v2 of the case study retrieves more context).
    The router escalates when the input's ``confidence`` is below ``CONFIDENCE_FLOOR`` or the
    customer asks for a manager or disputes a charge.
    """
    from langgraph.graph import END, START, StateGraph

    def joined(docs: list[Document]) -> str:
        return "\n".join(d.page_content for d in docs)

    retrievers = retriever if isinstance(retriever, Mapping) else dict.fromkeys(llms, retriever)
    rag = {
        version: (
            {"context": retrievers[version] | RunnableLambda(joined), "question": RunnablePassthrough()}
            | PROMPTS[version]
            | llm
            | StrOutputParser()
        ).with_config(run_name="support_rag")
        for version, llm in llms.items()
    }

    def classify(state: RouterState) -> RouterState:
        return {}

    def route(state: RouterState) -> str:
        question = state["question"].lower()
        if state.get("confidence", 1.0) < CONFIDENCE_FLOOR or "manager" in question or "charge" in question:
            return "human_review"
        return "order_status" if "order" in question else "answer"

    def answer(state: RouterState) -> RouterState:
        return {"answer": rag[state["version"]].invoke(state["question"])}

    def order_status(state: RouterState) -> RouterState:
        status = lookup_order.invoke({"order_id": state["order_id"]})
        return {"answer": rag[state["version"]].invoke(f"{state['question']} ({status})")}

    def human_review(state: RouterState) -> RouterState:
        update: RouterState = {"answer": "A human agent will contact you shortly."}
        if suggest_for_review:
            update["suggestion"] = rag[state["version"]].invoke(state["question"])
        if drafter is not None:
            update["draft"] = drafter(state["question"])
        return update

    graph = StateGraph(RouterState)
    graph.add_node("classify", classify)
    graph.add_node("answer", answer)
    graph.add_node("order_status", order_status)
    graph.add_node("human_review", human_review)
    graph.add_edge(START, "classify")
    graph.add_conditional_edges("classify", route, ["answer", "order_status", "human_review"])
    for node in ("answer", "order_status", "human_review"):
        graph.add_edge(node, END)
    return graph.compile(name="support_bot")


# -- the case study: a simulated day ------------------------------------------------------------


class SimulatedClock:
    """Epoch nanoseconds that move when the replay moves them (pass it as ``LLMObs(clock=...)``).

    Each reading also steps ``step_s`` forward, as framework work takes time: spans keep their
    order and chains get a small latency of their own. Thread-safe; never goes backwards.
    """

    def __init__(self, start: datetime, step_s: float = 0.0002) -> None:
        self._lock = threading.Lock()
        self._ns = _epoch_ns(start)
        self._step = int(step_s * 1e9)

    def __call__(self) -> int:
        with self._lock:
            self._ns += self._step
            return self._ns

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._ns += int(seconds * 1e9)

    def jump_to(self, moment: datetime) -> None:
        """Move to ``moment`` unless the clock is already past it (a request that starts late
        because the previous one ran long)."""
        with self._lock:
            self._ns = max(self._ns, _epoch_ns(moment))

    @property
    def now(self) -> datetime:
        with self._lock:
            ns = self._ns
        return datetime.fromtimestamp(ns // 1_000_000_000, tz=timezone.utc) + timedelta(
            microseconds=(ns % 1_000_000_000) // 1000
        )


def _epoch_ns(moment: datetime) -> int:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


@dataclass(frozen=True)
class VersionBehaviour:
    """How a prompt version behaves in the simulation."""

    context_docs: int  # documents retrieved into the prompt
    input_factor: float  # prompt tokens relative to v1
    output_factor: float  # answer tokens relative to v1
    human_review_share: float  # requests the classifier is unsure about
    thumbs_up: float  # share of positive feedback among users who give some


V1_BEHAVIOUR = VersionBehaviour(
    context_docs=2, input_factor=1.0, output_factor=1.0, human_review_share=0.10, thumbs_up=0.85
)
V2_REGRESSION = VersionBehaviour(
    context_docs=4, input_factor=2.0, output_factor=2.5, human_review_share=0.25, thumbs_up=0.70
)
FEEDBACK_SHARE = 0.15  # requests whose user clicks thumbs up or down


@dataclass(frozen=True)
class Scenario:
    """A replayed stretch of traffic.

    ``start`` defaults to ``hours`` before now (whole minutes, UTC), so "the last 24 h" of the
    store is the simulated day. Requests arrive at random times, ``requests_per_hour`` on average
    (each hour's count varies by ±10 %). From ``switch_at_hour`` on (None: never) requests use
    prompt v2, which behaves as ``V2_REGRESSION`` when ``v2_regresses`` and like v1 otherwise.
    The regression is visible one hour after the switch: that is when a checker running every
    few minutes with a 1 h window first sees a full hour of v2.
    """

    start: datetime | None = None
    hours: float = 24.0
    requests_per_hour: float = 40.0
    switch_at_hour: float | None = 20.0
    v2_regresses: bool = True
    seed: int = 7

    def start_time(self) -> datetime:
        if self.start is not None:
            return self.start if self.start.tzinfo else self.start.replace(tzinfo=timezone.utc)
        now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        return now - timedelta(hours=self.hours)

    def behaviour(self, version: str) -> VersionBehaviour:
        return V2_REGRESSION if version == "v2" and self.v2_regresses else V1_BEHAVIOUR


@dataclass
class ReplayResult:
    requests: int
    failures: int  # requests whose order lookup failed (by design: order ids ending in 13)
    start: datetime
    end: datetime
    switch: datetime | None
    by_version: dict[str, int] = field(default_factory=dict)
    human_review: dict[str, int] = field(default_factory=dict)  # routed to human_review, by version


def arrival_times(scenario: Scenario) -> list[datetime]:
    """Sorted request times: per hour, ``requests_per_hour`` ±10 % at uniform random minutes."""
    rng = random.Random(scenario.seed)
    start = scenario.start_time()
    times: list[float] = []
    hour = 0.0
    while hour < scenario.hours:
        span = min(1.0, scenario.hours - hour)
        count = round(scenario.requests_per_hour * span * rng.uniform(0.9, 1.1))
        times.extend(hour + rng.random() * span for _ in range(count))
        hour += 1.0
    return [start + timedelta(hours=h) for h in sorted(times)]


def replay(
    obs: LLMObs,
    clock: SimulatedClock,
    scenario: Scenario,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Run the scenario's requests through the support bot with ``obs``'s LangChain handler (and
    LlamaIndex instrumentation for the drafter), moving ``clock`` to each arrival and by each
    model call's simulated latency. ``progress(done, total)`` is called after each request."""
    rng = random.Random(scenario.seed + 1)
    start = scenario.start_time()
    switch = None if scenario.switch_at_hour is None else start + timedelta(hours=scenario.switch_at_hour)
    arrivals = arrival_times(scenario)

    def first_token(message: AIMessage) -> None:
        # ~0.35 s to the first token, longer for a longer prompt
        prompt_tokens = (message.usage_metadata or {}).get("input_tokens", 0)
        clock.advance(rng.uniform(0.2, 0.35) + prompt_tokens / 4000)

    def generation(message: AIMessage) -> None:
        clock.advance((message.usage_metadata or {}).get("output_tokens", 0) / rng.uniform(60, 80))

    vectors = InMemoryVectorStore(DeterministicFakeEmbedding(size=64))
    vectors.add_documents([Document(id=k, page_content=t, metadata={"topic": k}) for k, t in KNOWLEDGE])
    behaviours = {v: scenario.behaviour(v) for v in PROMPTS}
    retrievers = {
        v: ScoredRetriever(
            store=vectors, k=b.context_docs, on_retrieve=lambda: clock.advance(rng.uniform(0.04, 0.12))
        )
        for v, b in behaviours.items()
    }
    llms = {
        v: DemoChatModel(
            messages=_answers(random.Random(scenario.seed + 10 + i), v, b.input_factor, b.output_factor),
            streaming=True,
            on_first_token=first_token,
            on_generate=generation,
        )
        for i, (v, b) in enumerate(behaviours.items())
    }
    drafter = llama_index_drafter(scenario.seed, on_complete=lambda tokens: clock.advance(0.3 + tokens / 70))
    app = build_app(retrievers, llms, drafter, suggest_for_review=True)
    handler = obs.langchain_handler()
    llama_index = obs.instrument_llama_index() if drafter is not None else None
    questions = [q for q in QUESTIONS if "manager" not in q and "charge" not in q]
    result = ReplayResult(requests=len(arrivals), failures=0, start=start, end=start, switch=switch)
    by_version: Counter[str] = Counter()
    escalated: Counter[str] = Counter()
    try:
        for done, arrival in enumerate(arrivals, 1):
            clock.jump_to(arrival)
            version = "v2" if switch is not None and arrival >= switch else "v1"
            unsure = rng.random() < behaviours[version].human_review_share
            state: RouterState = {
                "question": rng.choice(questions),
                "version": version,
                "order_id": f"A{rng.randint(100, 999)}",
                "confidence": rng.uniform(0.05, CONFIDENCE_FLOOR) if unsure else rng.uniform(0.55, 0.99),
            }
            by_version[version] += 1
            escalated[version] += unsure
            run_id = uuid.uuid4()  # the trace's id, known in advance for the feedback below
            config = {
                "callbacks": [handler],
                "run_id": run_id,
                "metadata": {
                    "prompt_name": "support",
                    "prompt_version": version,
                    "session_id": f"s-{done % 97}",
                    "user_id": f"u-{done % 41}",
                },
            }
            try:
                app.invoke(state, config=config)
            except ValueError:
                result.failures += 1
            if rng.random() < FEEDBACK_SHARE:
                obs.feedback(run_id, score=float(rng.random() < behaviours[version].thumbs_up))
            if progress is not None:
                progress(done, len(arrivals))
    finally:
        if llama_index is not None:
            llama_index.close()
    result.end = max(clock.now, start + timedelta(hours=scenario.hours))
    result.by_version, result.human_review = dict(by_version), dict(escalated)
    return result


def simulate(
    database_url: str,
    scenario: Scenario | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    **llmobs_options: Any,
) -> ReplayResult:
    """Replay ``scenario`` (default: the case study's day) into the store at ``database_url``;
    every span is stored when this returns. ``llmobs_options`` go to ``LLMObs``."""
    scenario = scenario or Scenario()
    clock = SimulatedClock(scenario.start_time())
    llmobs_options.setdefault("service", "demo-support-bot")
    llmobs_options.setdefault("environment", "demo")
    with LLMObs(database_url, clock=clock, **llmobs_options) as obs:
        result = replay(obs, clock, scenario, progress)
        if not obs.flush(timeout=120.0):
            raise RuntimeError(f"the replay's spans were not all stored: {obs.stats()}")
    return result
