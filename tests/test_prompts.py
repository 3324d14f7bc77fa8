"""Prompt identity: declared versions, content-derived versions, and the prompt_versions table."""

from __future__ import annotations

import hashlib

from conftest import fetch
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder, PromptTemplate
from lc_fakes import ai, chat

from llmobs_callbacks import LLMObs


def _chain(system: str, *answers):
    prompt = ChatPromptTemplate.from_messages([("system", system), ("human", "{q}")])
    return prompt | chat(*answers) | StrOutputParser()


def test_declared_version_inherited_by_every_descendant(obs: LLMObs) -> None:
    _chain("be brief", ai("a", 10, 2)).invoke(
        {"q": "x"},
        config={
            "callbacks": [obs.langchain_handler()],
            "metadata": {"prompt_name": "support", "prompt_version": "v2"},
        },
    )
    assert obs.flush()
    rows = fetch(obs.database_url, "spans")
    assert len(rows) == 4
    assert {(r["prompt_name"], r["prompt_version"]) for r in rows} == {("support", "v2")}
    versions = fetch(obs.database_url, "prompt_versions")
    assert len(versions) == 1
    v = versions[0]
    assert (v["prompt_name"], v["prompt_version"]) == ("support", "v2")
    assert v["template"] == "[SystemMessagePromptTemplate] be brief\n[HumanMessagePromptTemplate] {q}"
    assert v["template_hash"] == hashlib.sha256(v["template"].encode()).hexdigest()
    assert v["first_seen"] <= v["last_seen"]
    # the prompt and the LLM call it fed carry the template's hash; the chain and parser do not
    assert {r["kind"]: r["template_hash"] for r in rows} == {
        "chain": None,
        "prompt": v["template_hash"],
        "llm": v["template_hash"],
        "parser": None,
    }


def test_derived_version_reaches_sibling_llm_and_is_stable(obs: LLMObs) -> None:
    handler = obs.langchain_handler()
    _chain("be brief", ai("a", 10, 2), ai("b", 10, 2)).invoke({"q": "x"}, config={"callbacks": [handler]})
    _chain("be brief", ai("a", 10, 2)).invoke({"q": "other question"}, config={"callbacks": [handler]})
    _chain("be verbose and kind", ai("c", 10, 2)).invoke({"q": "x"}, config={"callbacks": [handler]})
    assert obs.flush()
    rows = fetch(obs.database_url, "spans", order_by="start_time")
    llms = [r for r in rows if r["kind"] == "llm"]
    prompts = [r for r in rows if r["kind"] == "prompt"]
    assert len(llms) == 3 and len(prompts) == 3
    for p, llm in zip(prompts, llms, strict=True):
        assert llm["prompt_version"] == p["prompt_version"] and len(p["prompt_version"]) == 12
        assert llm["prompt_name"] == "ChatPromptTemplate"
    assert llms[0]["prompt_version"] == llms[1]["prompt_version"]  # same template, other input
    assert llms[2]["prompt_version"] != llms[0]["prompt_version"]  # template changed
    # the chain root and the parser do not belong to the prompt
    assert all(r["prompt_version"] is None for r in rows if r["kind"] in ("chain", "parser"))
    versions = {v["prompt_version"]: v for v in fetch(obs.database_url, "prompt_versions")}
    assert set(versions) == {llms[0]["prompt_version"], llms[2]["prompt_version"]}
    assert "be verbose and kind" in versions[llms[2]["prompt_version"]]["template"]
    assert versions[llms[0]["prompt_version"]]["template_hash"].startswith(llms[0]["prompt_version"])


def test_prompt_metadata_names_the_prompt(obs: LLMObs) -> None:
    prompt = PromptTemplate.from_template("Summarise: {text}")
    prompt.metadata = {"prompt_name": "summary"}
    (prompt | chat(ai("s", 3, 1))).invoke({"text": "t"}, config={"callbacks": [obs.langchain_handler()]})
    assert obs.flush()
    llm = next(r for r in fetch(obs.database_url, "spans") if r["kind"] == "llm")
    assert llm["prompt_name"] == "summary" and len(llm["prompt_version"]) == 12
    (row,) = fetch(obs.database_url, "prompt_versions")
    assert row["prompt_name"] == "summary" and row["template"] == "[PromptTemplate] Summarise: {text}"


def test_messages_placeholder_is_part_of_the_template(obs: LLMObs) -> None:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "hi"), MessagesPlaceholder("history"), ("human", "{q}")]
    )
    (prompt | chat(ai("s", 3, 1))).invoke(
        {"q": "x", "history": []}, config={"callbacks": [obs.langchain_handler()]}
    )
    assert obs.flush()
    (row,) = fetch(obs.database_url, "prompt_versions")
    assert row["template"] == (
        "[SystemMessagePromptTemplate] hi\n[MessagesPlaceholder] {history}\n[HumanMessagePromptTemplate] {q}"
    )


def test_declared_version_without_template_still_listed(obs: LLMObs) -> None:
    chat(ai("s", 3, 1)).invoke(
        "raw",
        config={
            "callbacks": [obs.langchain_handler()],
            "metadata": {"prompt_name": "raw", "prompt_version": "7"},
        },
    )
    assert obs.flush()
    (row,) = fetch(obs.database_url, "prompt_versions")
    assert (row["prompt_name"], row["prompt_version"], row["template"]) == ("raw", "7", None)
