"""Crafted traffic for the anomaly, alert, budget and gate tests: requests through the real
LangChain handler (a retriever, a tool and a fake chat model inside a RunnableLambda), with a
simulated clock so a day of traffic takes a second."""

from __future__ import annotations

import contextlib
import random
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from lc_fakes import UsageFakeChatModel, ai

from llmobs_callbacks import LLMObs

T0 = datetime(2025, 3, 3, tzinfo=timezone.utc)


class Clock:
    """Simulated epoch nanoseconds: each reading advances 2 ms; ``at`` jumps to a moment."""

    def __init__(self, start: datetime = T0) -> None:
        self._lock = threading.Lock()
        self.ns = int(start.timestamp() * 1e9)

    def at(self, moment: datetime) -> None:
        with self._lock:
            self.ns = max(self.ns, int(moment.timestamp() * 1e9))

    def __call__(self) -> int:
        with self._lock:
            self.ns += 2_000_000
            return self.ns


class Docs(BaseRetriever):
    """Two documents, or none for a question containing "nothing"."""

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        if "nothing" in query:
            return []
        return [Document(id=f"d{i}", page_content=f"doc {i} about {query}") for i in range(2)]


@tool
def lookup_order(order_id: str) -> str:
    """Look up an order."""
    if order_id.startswith("bad"):
        raise ValueError(f"order {order_id} not found")
    return f"order {order_id}: shipped"


@dataclass
class Request:
    version: str = "v1"
    input_tokens: int = 100
    output_tokens: int = 20
    empty_retrieval: bool = False
    tool_fails: bool = False  # the tool fails, the request still answers
    fails: bool = False  # the request fails (the error reaches the caller)
    model: str = "gpt-4o-mini"


class Traffic:
    """Sends ``Request``s through one traced app at simulated times."""

    def __init__(self, obs: LLMObs, clock: Clock) -> None:
        self.obs, self.clock = obs, clock
        self.handler = obs.langchain_handler()
        self._next: Request | None = None
        retriever = Docs()

        def messages() -> Iterator[Any]:
            while True:
                r = self._next
                assert r is not None
                yield ai("an answer", r.input_tokens, r.output_tokens, model_name=r.model)

        self.llm = UsageFakeChatModel(messages=messages())

        def handle(inputs: dict[str, Any]) -> str:
            r = self._next
            assert r is not None
            retriever.invoke("nothing" if r.empty_retrieval else inputs["question"])
            try:
                lookup_order.invoke({"order_id": "bad-1" if r.tool_fails or r.fails else "ok-1"})
            except ValueError:
                if r.fails:
                    raise
            return str(self.llm.invoke(inputs["question"]).content)

        self.app = RunnableLambda(handle).with_config(run_name="support")

    def send(self, at: datetime, request: Request) -> str:
        """One request at ``at``; returns its trace id."""
        self.clock.at(at)
        self._next = request
        run_id = uuid.uuid4()
        config = {
            "callbacks": [self.handler],
            "run_id": run_id,
            "metadata": {"prompt_name": "support", "prompt_version": request.version},
        }
        with contextlib.suppress(ValueError):
            self.app.invoke({"question": "where is my order?"}, config=config)
        return str(run_id)

    def hours(
        self,
        start: datetime,
        hours: int,
        per_hour: int,
        make: Callable[[datetime, random.Random], Request],
        seed: int = 1,
    ) -> list[str]:
        """``per_hour`` requests in each of ``hours`` hours from ``start``, at random minutes."""
        rng = random.Random(seed)
        ids = []
        for h in range(hours):
            for moment in sorted(
                start + timedelta(hours=h, seconds=rng.uniform(0, 3599)) for _ in range(per_hour)
            ):
                ids.append(self.send(moment, make(moment, rng)))
        return ids


def noisy(version: str = "v1", scale: float = 1.0, **kw: Any) -> Callable[[datetime, random.Random], Request]:
    """Requests of ``version`` with ±15 % random token counts (× ``scale``)."""

    def make(moment: datetime, rng: random.Random) -> Request:
        return Request(
            version=version,
            input_tokens=int(rng.uniform(85, 115) * scale),
            output_tokens=int(rng.uniform(17, 23) * scale),
            **kw,
        )

    return make
