"""Attributes are bounded like content: metadata, invocation parameters, tags and document
metadata are cut string by string (``max_attribute_chars``) and in all (``max_content_chars``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import fetch, sql
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda
from lc_fakes import ai, chat

from llmobs_callbacks import ConfigurationError, LLMObs
from llmobs_callbacks.serialize import TRUNCATION_MARKER, bounded_list, jsonable_dict

DEFAULT_ATTRIBUTE_CHARS = 4_096


def cut(text: str, limit: int) -> str:
    return text[: limit - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


def test_a_5_mb_metadata_value_inherited_by_1000_spans_costs_each_row_a_bounded_size(
    db_url: str, tmp_path: Path
) -> None:
    blob = "".join(f"{i:07d};" for i in range(625_000))  # 5,000,000 characters
    steps = RunnableLambda(lambda x: x + 1)
    for _ in range(3):
        steps = steps | RunnableLambda(lambda x: x + 1)
    with LLMObs(db_url, prometheus_registry=None, spool_dir=tmp_path / "spool") as obs:
        config = {"callbacks": [obs.langchain_handler()], "metadata": {"blob": blob, "team": "search"}}
        for i in range(200):  # 200 sequences of 4 steps: 1,000 spans, every one inherits the blob
            assert steps.invoke(i, config=config) == i + 4
        assert obs.flush()
    spans = fetch(db_url, "spans")
    assert len(spans) == 1_000
    expected = cut(blob, DEFAULT_ATTRIBUTE_CHARS)
    assert all(s["attributes"] == {"blob": expected, "team": "search"} for s in spans)
    (largest,) = sql(db_url, "SELECT MAX(LENGTH(CAST(attributes AS TEXT))) FROM spans")[0]
    assert DEFAULT_ATTRIBUTE_CHARS < largest < DEFAULT_ATTRIBUTE_CHARS + 100
    if db_url.startswith("sqlite"):
        path = Path(db_url.removeprefix("sqlite:///"))
        on_disk = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        assert on_disk < 1_000 * 3 * DEFAULT_ATTRIBUTE_CHARS  # 5 GB unbounded; ~10 MB here


class BigMetadataRetriever(BaseRetriever):
    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list:
        return [Document(page_content="doc", metadata={"id": "d-1", "raw": "r" * 50_000})]


def test_many_entries_long_tags_invocation_parameters_and_document_metadata_are_bounded(
    sqlite_url: str,
) -> None:
    many = {f"k{i:06d}": i for i in range(100_000)}
    with LLMObs(
        sqlite_url,
        synchronous=True,
        prometheus_registry=None,
        max_content_chars=2_000,
        max_attribute_chars=100,
    ) as obs:
        handler = {"callbacks": [obs.langchain_handler()]}
        RunnableLambda(lambda x: x).invoke(
            1, config={**handler, "metadata": many, "tags": ["t" * 1_000_000, "short"]}
        )
        model = chat(ai("ok", 3, 1)).bind(tools_schema="s" * 1_000_000)
        model.invoke("hi", config=handler)
        BigMetadataRetriever().invoke("q", config=handler)
    spans = {s["kind"]: s for s in fetch(sqlite_url, "spans")}
    lam = spans["chain"]
    assert lam["tags"] == [cut("t" * 1_000_000, 100), "short"]
    attributes = lam["attributes"]
    left_out = attributes.pop(TRUNCATION_MARKER)
    assert len(attributes) + left_out == 100_000 and left_out > 99_000  # counted, not silently lost
    assert list(attributes) == [f"k{i:06d}" for i in range(len(attributes))]  # the first ones kept
    assert len(json.dumps(attributes)) < 2_000 + 100
    params = spans["llm"]["attributes"]["invocation_params"]
    assert params == {
        "_type": "generic-fake-chat-model",
        "stop": None,
        "tools_schema": cut("s" * 1_000_000, 100),
    }
    (doc,) = fetch(sqlite_url, "retrieved_documents")
    assert doc["attributes"] == {"id": "d-1", "raw": cut("r" * 50_000, 100)}


def test_a_secret_at_the_attribute_cut_is_redacted_not_cut(sqlite_url: str) -> None:
    token = "ghp_" + "Zx81QmVb7Ks0LpTd3NwYr5HcJf2GaUe9Bo4I"
    note = "x" * 70 + " " + token + " and more words after it"  # the token straddles the cut
    with LLMObs(sqlite_url, synchronous=True, redact=True, max_attribute_chars=100) as obs:
        RunnableLambda(lambda s: "ok").invoke(
            "q", config={"callbacks": [obs.langchain_handler()], "metadata": {"note": note}}
        )
    (row,) = fetch(sqlite_url, "spans")
    # cut first, then redacted, this would store "… ghp_Zx81QmVb7Ks0L…[truncated]": too short to
    # be recognised, 13 characters of the token in clear
    assert row["attributes"]["note"] == "x" * 70 + " [REDACTED:secret]" + TRUNCATION_MARKER


@pytest.mark.parametrize("value", [0, -1, "4096", True, 1.5])
def test_max_attribute_chars_must_be_a_positive_integer(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigurationError, match="max_attribute_chars must be a positive integer"):
        LLMObs(f"sqlite:///{tmp_path / 'x.db'}", prometheus_registry=None, max_attribute_chars=value)  # type: ignore[arg-type]
    assert not (tmp_path / "x.db").exists()


def test_bounded_copies_of_nested_and_odd_values() -> None:
    nested = {"a": {"b": ["x" * 500, {"c": "y" * 500}]}, "n": float("nan"), 3: b"raw"}
    assert jsonable_dict(nested, 20, 1_000) == {
        "a": {"b": [cut("x" * 500, 20), {"c": cut("y" * 500, 20)}]},
        "n": "nan",
        "3": "<3 bytes>",
    }
    huge = list(range(1_000_000))
    bounded = jsonable_dict({"v": huge}, 50, 200)["v"]  # type: ignore[index]
    assert bounded[: len(bounded) - 1] == list(range(len(bounded) - 1))
    assert bounded[-1] == f"{TRUNCATION_MARKER} {1_000_000 - len(bounded) + 1} more"
    cyclic: dict = {"k": "v"}
    cyclic["self"] = cyclic
    assert jsonable_dict(cyclic, 50, 1_000) == {"k": "v", "self": "<recursion>"}
    assert bounded_list(["a" * 30, 1, None], 20, 1_000) == [cut("a" * 30, 20), 1, None]
    flat = {"user_id": "u-1", "n": 2, "ok": True}
    assert jsonable_dict(flat, 100, 1_000) == flat and jsonable_dict(flat, 100, 1_000) is not flat
