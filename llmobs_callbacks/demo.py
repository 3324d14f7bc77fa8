"""A small support bot traced end to end, on LangChain's shipped fake models (no network).

Retrieval-augmented answers with two prompt versions (v2 asks for longer answers and costs
more), a tool call, a LangGraph router that escalates some questions to human review, and an
occasional failing tool — enough to make the report and the analysis notebooks meaningful.

When llama-index-core is installed, the human-review step also drafts a reply for the agent
with a small LlamaIndex app (a ``VectorStoreIndex`` of past tickets and a query engine, on
LlamaIndex's ``MockLLM``/``MockEmbedding`` reporting gpt-4o-mini usage): its spans join the
request's trace, so the report's shape and totals stay per request.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
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
    """A fake chat model that reports OpenAI-style usage so cost is priced like gpt-4o-mini."""

    model_name: str = "gpt-4o-mini"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params.update(ls_provider="openai", ls_model_name=self.model_name)
        return params


def _answers(rng: random.Random, version: str) -> Any:
    while True:
        words = rng.randint(20, 40) * (2 if version == "v2" else 1)
        prompt_tokens = rng.randint(180, 260) * (2 if version == "v2" else 1)
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

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
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
    answer: str
    draft: str


PAST_TICKETS = [
    ("t-101", "Customer was charged twice; we refunded the duplicate charge within 2 days."),
    ("t-102", "Customer asked for a manager about a late delivery; we offered express reshipping."),
    ("t-103", "Customer disputed a subscription charge after cancelling; we refunded the last month."),
    ("t-104", "Customer could not reset the password; we unlocked the account manually."),
]


def llama_index_drafter(seed: int = 7) -> Callable[[str], str] | None:
    """A LlamaIndex query engine drafting a reply from past tickets, or None without llama-index.

    Shipped mocks only: ``MockLLM`` and ``MockEmbedding`` subclasses, so it never needs a
    network; the LLM reports OpenAI-shaped usage for gpt-4o-mini, so calls are priced.
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
    retriever: BaseRetriever,
    llms: dict[str, DemoChatModel],
    drafter: Callable[[str], str] | None = None,
) -> Any:
    """The support bot: a LangGraph router in front of a RAG chain, an order tool and humans
    (who get a reply drafted by ``drafter``, the LlamaIndex app, when there is one)."""
    from langgraph.graph import END, START, StateGraph

    context = retriever | RunnableLambda(lambda docs: "\n".join(d.page_content for d in docs))
    rag = {
        version: (
            {"context": context, "question": RunnablePassthrough()}
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
        if "manager" in question or "charge" in question:
            return "human_review"
        return "order_status" if "order" in question else "answer"

    def answer(state: RouterState) -> RouterState:
        return {"answer": rag[state["version"]].invoke(state["question"])}

    def order_status(state: RouterState) -> RouterState:
        status = lookup_order.invoke({"order_id": state["order_id"]})
        return {"answer": rag[state["version"]].invoke(f"{state['question']} ({status})")}

    def human_review(state: RouterState) -> RouterState:
        update: RouterState = {"answer": "A human agent will contact you shortly."}
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


def run_demo(obs: LLMObs, traces: int = 40, seed: int = 7) -> int:
    """Run ``traces`` requests (half on prompt v1, then v2); returns how many failed (by design)."""
    rng = random.Random(seed)
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=64))
    store.add_documents([Document(id=k, page_content=t, metadata={"topic": k}) for k, t in KNOWLEDGE])
    llms = {v: DemoChatModel(messages=_answers(random.Random(seed + i), v)) for i, v in enumerate(PROMPTS)}
    drafter = llama_index_drafter(seed)
    app = build_app(ScoredRetriever(store=store, k=2), llms, drafter)
    handler = obs.langchain_handler()
    # LlamaIndex spans inside a recorded LangChain run join its trace (see integrations/llama_index.py)
    llama_index = obs.instrument_llama_index() if drafter is not None else None
    try:
        return _run_requests(app, handler, traces, rng)
    finally:
        if llama_index is not None:
            llama_index.close()


def _run_requests(app: Any, handler: Any, traces: int, rng: random.Random) -> int:
    failures = 0
    for i in range(traces):
        version = "v1" if i < traces // 2 else "v2"
        question = rng.choice(QUESTIONS)
        config = {
            "callbacks": [handler],
            "metadata": {
                "prompt_name": "support",
                "prompt_version": version,
                "session_id": f"s-{i % 7}",
                "user_id": f"u-{i % 5}",
            },
        }
        try:
            app.invoke(
                {"question": question, "version": version, "order_id": f"A{rng.randint(10, 15)}"},
                config=config,
            )
        except ValueError:
            failures += 1
    return failures
