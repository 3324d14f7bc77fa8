"""LangGraph: node spans and every routing decision (conditional edges, Send, Command)."""

from __future__ import annotations

import operator
from typing import Annotated, Literal

import pytest
from conftest import fetch
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send
from lc_fakes import ai, chat
from typing_extensions import TypedDict

from llmobs_callbacks import LLMObs


class State(TypedDict, total=False):
    x: int
    out: Annotated[list, operator.add]


def _branches(url: str) -> list[tuple]:
    rows = fetch(url, "branch_decisions", order_by="created_at")
    return sorted((r["graph"], r["from_node"], r["to_node"], r["condition"]) for r in rows)


def test_conditional_edge_and_command_goto(obs: LLMObs) -> None:
    def a(s: State) -> State:
        return {"x": s["x"] + 1}

    def b(s: State) -> State:
        return {"x": s["x"] * 2}

    def c(s: State) -> Command[Literal["b"]]:
        return Command(update={"x": 5}, goto="b")

    def route(s: State) -> str:
        return "b" if s["x"] > 1 else "c"

    g = StateGraph(State)
    g.add_node("a", a)
    g.add_node("b", b)
    g.add_node("c", c)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", route, ["b", "c"])
    g.add_edge("b", END)
    app = g.compile(name="calc")
    assert app.invoke({"x": 0}, config={"callbacks": [obs.langchain_handler()]})["x"] == 10
    assert app.invoke({"x": 5}, config={"callbacks": [obs.langchain_handler()]})["x"] == 12
    assert obs.flush()
    spans = fetch(obs.database_url, "spans")
    nodes = [r for r in spans if r["kind"] == "graph_node"]
    assert sorted(r["name"] for r in nodes) == ["a", "a", "b", "b", "c"]
    roots = [r for r in spans if r["parent_span_id"] is None]
    assert len(roots) == 2 and {r["name"] for r in roots} == {"calc"}
    for node in nodes:
        assert node["parent_span_id"] in {r["span_id"] for r in roots}
    route_spans = [r for r in spans if r["name"] == "route"]
    assert len(route_spans) == 2 and all(r["kind"] == "chain" for r in route_spans)
    assert _branches(obs.database_url) == [
        ("calc", "a", "b", "route"),
        ("calc", "a", "c", "route"),
        ("calc", "c", "b", "Command"),
    ]
    rows = fetch(obs.database_url, "branch_decisions")
    by_trace = {r["span_id"]: r for r in spans}
    for row in rows:
        assert by_trace[row["span_id"]]["trace_id"] == row["trace_id"]


def test_route_to_end_and_send_fan_out(obs: LLMObs) -> None:
    def prep(s: State) -> State:
        return {}

    def fan(s: State):
        if s["x"] == 0:
            return END
        return [Send("work", {"x": i, "out": []}) for i in range(s["x"])]

    def work(s: State) -> State:
        return {"out": [s["x"]]}

    g = StateGraph(State)
    g.add_node("prep", prep)
    g.add_node("work", work)
    g.add_edge(START, "prep")
    g.add_conditional_edges("prep", fan, ["work", END])
    g.add_edge("work", END)
    app = g.compile()
    assert sorted(
        app.invoke({"x": 3, "out": []}, config={"callbacks": [obs.langchain_handler()]})["out"]
    ) == [0, 1, 2]
    app.invoke({"x": 0, "out": []}, config={"callbacks": [obs.langchain_handler()]})
    assert obs.flush()
    # three Sends to one node are one routing decision
    assert _branches(obs.database_url) == [
        ("LangGraph", "prep", "__end__", "fan"),
        ("LangGraph", "prep", "work", "fan"),
    ]
    assert len([r for r in fetch(obs.database_url, "spans") if r["name"] == "work"]) == 3


def test_string_outputs_inside_nodes_are_not_branches(obs: LLMObs) -> None:
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    llm = chat(ai("b", 3, 1))  # the model answers with a node name, through a parser
    inner = ChatPromptTemplate.from_messages([("human", "{x}")]) | llm | StrOutputParser()

    def node(s: State) -> State:
        inner.invoke({"x": s["x"]})
        return {"x": 1}

    g = StateGraph(State)
    g.add_node("a", node)
    g.add_node("b", lambda s: {})
    g.add_edge(START, "a")
    g.add_edge("a", END)
    g.compile().invoke({"x": 0}, config={"callbacks": [obs.langchain_handler()]})
    assert obs.flush()
    assert _branches(obs.database_url) == []
    spans = fetch(obs.database_url, "spans")
    assert len({r["trace_id"] for r in spans}) == 1
    node_a = next(r for r in spans if r["name"] == "a")
    inner_root = next(r for r in spans if r["name"] == "RunnableSequence")
    assert inner_root["parent_span_id"] == node_a["span_id"]


def test_prebuilt_react_agent_tool_loop(obs: LLMObs) -> None:
    from langgraph.prebuilt import create_react_agent

    @tool
    def get_weather(city: str) -> str:
        """Weather of a city."""
        return f"sunny in {city}"

    llm = chat(
        ai("", 20, 5, tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call-1"}]),
        ai("It is sunny in Paris.", 40, 8),
    )
    agent = create_react_agent(llm, [get_weather])
    result = agent.invoke(
        {"messages": [HumanMessage("weather in Paris?")]},
        config={"callbacks": [obs.langchain_handler()], "metadata": {"session_id": "s-9"}},
    )
    assert isinstance(result["messages"][-1], AIMessage)
    assert obs.flush()
    spans = fetch(obs.database_url, "spans")
    assert len({r["trace_id"] for r in spans}) == 1
    assert all(r["session_id"] == "s-9" for r in spans)
    llms = [r for r in spans if r["kind"] == "llm"]
    assert [(r["input_tokens"], r["output_tokens"]) for r in sorted(llms, key=lambda r: r["start_time"])] == [
        (20, 5),
        (40, 8),
    ]
    (weather,) = [r for r in spans if r["kind"] == "tool"]
    assert (
        weather["name"] == "get_weather"
        and "Paris" in weather["input"]
        and "sunny in Paris" in weather["output"]
    )
    node_names = sorted(r["name"] for r in spans if r["kind"] == "graph_node")
    assert node_names == ["agent", "agent", "tools"]
    decisions = _branches(obs.database_url)
    assert [(d[1], d[2]) for d in decisions] == [("agent", "__end__"), ("agent", "tools")]


# -- sessions: thread_id, interrupts and resumes -------------------------------------------------


def test_thread_id_becomes_every_spans_session_id(obs: LLMObs) -> None:
    llm = chat(ai("hello", 5, 1), ai("hi", 5, 1), ai("hey", 5, 1))

    def talk(s: State) -> State:
        llm.invoke([HumanMessage("hi")])
        return {"x": s["x"] + 1}

    g = StateGraph(State)
    g.add_node("talk", talk)
    g.add_edge(START, "talk")
    g.add_edge("talk", END)
    app = g.compile(name="chat")
    handler = obs.langchain_handler()
    app.invoke({"x": 0}, config={"callbacks": [handler], "configurable": {"thread_id": "t-7"}})
    # an explicit session_id (or conversation_id) in metadata wins over the thread
    app.invoke(
        {"x": 0},
        config={
            "callbacks": [handler],
            "configurable": {"thread_id": "t-8"},
            "metadata": {"session_id": "s-1"},
        },
    )
    app.invoke(
        {"x": 0},
        config={
            "callbacks": [handler],
            "configurable": {"thread_id": "t-9"},
            "metadata": {"conversation_id": "c-1"},
        },
    )
    assert obs.flush()
    spans = fetch(obs.database_url, "spans")
    by_trace: dict[str, set] = {}
    for r in spans:
        by_trace.setdefault(r["trace_id"], set()).add((r["kind"], r["session_id"]))
    assert sorted(sorted(kinds) for kinds in by_trace.values()) == sorted(
        [[("chain", sid), ("graph_node", sid), ("llm", sid)] for sid in ("t-7", "s-1", "c-1")]
    )


class Review(TypedDict, total=False):
    draft: str
    verdict: str
    note: str


def _review_graph():
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import interrupt

    def write(s: Review) -> Review:
        return {"draft": "refund approved"}

    def approve(s: Review) -> Review:
        return {"verdict": interrupt({"question": f"send {s['draft']!r}?"})}

    def annotate(s: Review) -> Review:
        return {"note": interrupt("any note?")}

    g = StateGraph(Review)
    g.add_node("write", write)
    g.add_node("approve", approve)
    g.add_node("annotate", annotate)
    g.add_edge(START, "write")
    g.add_edge("write", "approve")
    g.add_edge("approve", "annotate")
    g.add_edge("annotate", END)
    return g.compile(name="review", checkpointer=InMemorySaver())


def test_a_resumed_run_names_the_interrupted_one(obs: LLMObs) -> None:
    app = _review_graph()
    config = {"callbacks": [obs.langchain_handler()], "configurable": {"thread_id": "ticket-42"}}
    first = app.invoke({}, config=config)
    assert "__interrupt__" in first  # LangGraph 1.x returns normally from an interrupt
    second = app.invoke(Command(resume="yes"), config=config)
    assert "__interrupt__" in second  # interrupted again, by the next node
    assert app.invoke(Command(resume="none"), config=config) == {
        "draft": "refund approved",
        "verdict": "yes",
        "note": "none",
    }
    plain = {"callbacks": [obs.langchain_handler()], "configurable": {"thread_id": "ticket-43"}}
    _review_graph().invoke({}, config=plain)  # interrupted, never resumed
    assert obs.flush()
    spans = fetch(obs.database_url, "spans", order_by="start_time")
    roots = [r for r in spans if r["parent_span_id"] is None]
    assert [r["name"] for r in roots] == ["review"] * 4
    assert all(r["status"] == "ok" for r in spans)  # an interrupt is not an error
    links = [
        (
            r["session_id"],
            r["attributes"].get("interrupted"),
            r["attributes"].get("resumed"),
            r["attributes"].get("resumed_from_trace_id"),
        )
        for r in roots
    ]
    t1, t2 = roots[0]["trace_id"], roots[1]["trace_id"]
    assert links == [
        ("ticket-42", True, None, None),
        ("ticket-42", True, True, t1),
        ("ticket-42", None, True, t2),
        ("ticket-43", True, None, None),
    ]
    assert {r["session_id"] for r in spans} == {"ticket-42", "ticket-43"}


def test_an_interrupt_raised_out_of_the_root_is_linked_too(obs: LLMObs) -> None:
    """Older LangGraph versions raise GraphInterrupt out of the root run instead of returning."""
    from langchain_core.runnables import RunnableLambda
    from langgraph.errors import GraphInterrupt

    def ask(_: object) -> str:
        raise GraphInterrupt(())

    config = {"callbacks": [obs.langchain_handler()], "metadata": {"session_id": "s-3"}}
    with pytest.raises(GraphInterrupt):
        RunnableLambda(ask, name="ask").invoke("draft", config=config)
    resume = RunnableLambda(lambda command: command.resume, name="resume")
    assert resume.invoke(Command(resume="ok"), config=config) == "ok"
    assert obs.flush()
    first, second = fetch(obs.database_url, "spans", order_by="start_time")
    assert (first["name"], first["status"], first["error_type"]) == ("ask", "ok", "GraphInterrupt")
    assert first["attributes"]["interrupted"] is True
    assert second["attributes"]["resumed_from_trace_id"] == first["trace_id"]
    assert first["session_id"] == second["session_id"] == "s-3"
