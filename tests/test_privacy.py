"""Privacy end to end: planted secrets never reach the store, the metrics, the logs or the judge.

A real LangChain RAG chain (prompt template, retriever, chat model, parser), a failing tool,
user feedback and a judge carry an e-mail address, a phone number, a Luhn-valid card number,
an ``sk-`` key, a ``Bearer`` token and an IP address through every path that stores text; then
one value of every credential format of ``tests/secret_corpus.py`` does the same, and the raw
database file, its WAL, the spool, the rows, the metrics and the logs are searched for them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
import secret_corpus as corpus
import sqlalchemy as sa
from conftest import fetch
from judge_fakes import scripted
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableParallel, RunnablePassthrough
from langchain_core.tools import tool
from lc_fakes import ai, chat
from li_fakes import clean_dispatcher_fixture, li_settings_fixture  # noqa: F401 - fixtures
from llama_index.core import Document as LIDocument
from llama_index.core import VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from llmobs_callbacks import Judge, LLMObs
from llmobs_callbacks.sinks.tables import TABLES

EMAIL = "jane.doe@example.org"
PHONE = "+1 415-555-0132"
CARD = "4111 1111 1111 1111"
KEY = "sk-proj-Q7fT2kLm9XcV4bN8pR1sZ6wY"
TOKEN = "tok9Xv2Lq8Rz7Wm4Kp1N"
IP = "203.0.113.77"
# What must appear nowhere (each secret, and the shapes it could be re-encoded in).
NEEDLES = [
    EMAIL,
    "jane.doe",
    "415-555-0132",
    "4155550132",
    CARD,
    "4111111111111111",
    KEY,
    "Q7fT2kLm9XcV4bN8pR1sZ6wY",
    TOKEN,
    IP,
]
QUESTION = f"I am {EMAIL}, phone {PHONE}, card {CARD}. Where is my order?"
ANSWER = f"Your order ships from {IP}; I used key {KEY} to look it up."
DOC_TEXT = f"Customer record {EMAIL}, Authorization: Bearer {TOKEN}"
JUDGE_REPLY = (
    '{"faithfulness": 4, "relevance": 5, "completeness": 3, "hallucination": "no", '
    f'"reason": "the answer quotes {CARD} and {EMAIL}"}}'
)


class SecretRetriever(BaseRetriever):
    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list:
        return [Document(page_content=DOC_TEXT, metadata={"id": "kb-1", "owner": EMAIL, "score": 0.9})]


@tool
def lookup_customer(query: str) -> str:
    """Look a customer up."""
    raise ValueError(f"no customer {EMAIL} (key {KEY})")


def rag_chain() -> Any:
    prompt = ChatPromptTemplate.from_messages(
        [("system", f"Escalate to {EMAIL} if unsure."), ("human", "Context: {context}\nQuestion: {question}")]
    )
    return (
        RunnableParallel(context=SecretRetriever(), question=RunnablePassthrough())
        | prompt
        | chat(ai(ANSWER, 50, 10))
        | StrOutputParser()
    )


class LeakyExporter:
    """A third-party sink whose error message quotes data: it must not reach our logs raw."""

    def export(self, spans: Any) -> None:
        raise RuntimeError(f"sink rejected a row for {EMAIL} from {IP}")

    def shutdown(self) -> None:
        pass


def run_everything(obs: LLMObs, flush_timeout: float = 10.0) -> str:
    run_id = uuid.uuid4()
    config = {
        "callbacks": [obs.langchain_handler()],
        "run_id": run_id,
        "tags": [f"caller:{IP}"],
        "metadata": {"user_id": "u-1", "session_id": "s-1", "contact": PHONE, "prompt_version": "v1"},
    }
    assert rag_chain().invoke(QUESTION, config=config) == ANSWER
    with pytest.raises(ValueError, match="no customer"):  # the user's exception, unchanged
        lookup_customer.invoke({"query": QUESTION}, config={"callbacks": [obs.langchain_handler()]})
    obs.feedback(run_id, 0.0, comment=f"wrong! write to {EMAIL} or call {PHONE}")
    obs.flush(timeout=flush_timeout)
    return str(run_id)


def assert_clean(text: str, where: str) -> None:
    leaked = [n for n in NEEDLES if n in text]
    assert not leaked, f"{leaked} found in {where}"


def store_dump(url: str) -> str:
    """Every row of every table, as text."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return "\n".join(repr(tuple(r)) for t in TABLES for r in conn.execute(sa.select(t)))
    finally:
        engine.dispose()


def sqlite_files(url: str) -> dict[str, bytes]:
    path = Path(url.removeprefix("sqlite:///"))
    files = [path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))]
    return {f.name: f.read_bytes() for f in files if f.exists()}


def test_redaction_keeps_planted_secrets_out_of_store_metrics_logs_and_judge(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    reg = CollectorRegistry()
    judge_llm = scripted(JUDGE_REPLY)
    caplog.set_level(logging.DEBUG, logger="llmobs_callbacks")
    obs = LLMObs(
        db_url,
        redact=True,
        judge=Judge(judge_llm, sample_rate=1.0, workers=1),
        exporters=[LeakyExporter()],
        prometheus_registry=reg,
    )
    try:
        trace_id = run_everything(obs)
        assert obs.flush()
        stats = obs.stats()
        if db_url.startswith("sqlite"):
            files = sqlite_files(db_url)
            assert any(name.endswith("-wal") for name in files)  # WAL mode: checked too
            for name, data in files.items():
                assert_clean(data.decode("utf-8", "replace"), name)
        exposition = generate_openmetrics(reg).decode()
    finally:
        obs.shutdown()
    # the judge ran on redacted text (and its reply, quoting secrets, was redacted in turn)
    assert len(judge_llm.prompts) == 2  # the RAG trace and the tool's trace
    for prompt in judge_llm.prompts:
        assert_clean(prompt, "the judge's prompt")
    rag_prompt = next(p for p in judge_llm.prompts if "Where is my order" in p)
    assert "[REDACTED:email]" in rag_prompt and "[REDACTED:secret]" in rag_prompt
    assert set(stats["handler_errors"]) == {"export:LeakyExporter"}  # nothing else failed
    assert_clean(store_dump(db_url), "the store's rows")
    if db_url.startswith("sqlite"):
        for name, data in sqlite_files(db_url).items():
            assert_clean(data.decode("utf-8", "replace"), name)
    assert 'trace_id="' in exposition  # exemplars are on
    assert_clean(exposition, "the OpenMetrics exposition")
    assert "RuntimeError" in caplog.text and "export:LeakyExporter" in caplog.text
    assert_clean(caplog.text, "the logs")
    # What is stored instead: markers where the secrets were, everything else intact.
    spans = {r["name"]: r for r in fetch(db_url, "spans")}
    root = spans["RunnableSequence"]
    assert root["input"] == (
        "I am [REDACTED:email], phone [REDACTED:phone], card [REDACTED:credit_card]. Where is my order?"
    )
    assert (
        root["output"] == "Your order ships from [REDACTED:ip]; I used key [REDACTED:secret] to look it up."
    )
    assert root["tags"] == ["caller:[REDACTED:ip]"] and root["attributes"]["contact"] == "[REDACTED:phone]"
    assert root["user_id"] == "u-1" and root["session_id"] == "s-1"  # ids without secrets stay
    assert root["input_tokens"] is None and spans["UsageFakeChatModel"]["input_tokens"] == 50
    tool_span = spans["lookup_customer"]
    assert tool_span["status"] == "error" and tool_span["error_type"] == "ValueError"
    assert tool_span["error_message"] == "no customer [REDACTED:email] (key [REDACTED:secret])"
    (doc,) = fetch(db_url, "retrieved_documents")
    assert doc["content"] == "Customer record [REDACTED:email], Authorization: Bearer [REDACTED:secret]"
    assert doc["attributes"]["owner"] == "[REDACTED:email]" and doc["document_id"] == "kb-1"
    (template,) = [r["template"] for r in fetch(db_url, "prompt_versions")]
    assert "Escalate to [REDACTED:email] if unsure." in template
    scores = {(r["source"], r["name"]): r for r in fetch(db_url, "scores", trace_id=trace_id)}
    assert (
        scores[("user", "user_feedback")]["comment"]
        == "wrong! write to [REDACTED:email] or call [REDACTED:phone]"
    )
    judged = scores[("judge", "faithfulness")]
    assert judged["trace_id"] == trace_id and judged["value"] == 4.0
    assert judged["comment"] == "the answer quotes [REDACTED:credit_card] and [REDACTED:email]"


def test_capture_content_false_stores_no_text_at_all(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    reg = CollectorRegistry()
    caplog.set_level(logging.DEBUG, logger="llmobs_callbacks")
    obs = LLMObs(db_url, capture_content=False, exporters=[LeakyExporter()], prometheus_registry=reg)
    try:
        run_id = uuid.uuid4()
        config = {"callbacks": [obs.langchain_handler()], "run_id": run_id, "metadata": {"user_id": "u-1"}}
        assert rag_chain().invoke(QUESTION, config=config) == ANSWER
        with pytest.raises(ValueError):
            lookup_customer.invoke({"query": QUESTION}, config={"callbacks": [obs.langchain_handler()]})
        obs.feedback(run_id, 1.0, comment=f"thanks, mail {EMAIL}")
        assert obs.flush()
        if db_url.startswith("sqlite"):
            for name, data in sqlite_files(db_url).items():
                assert_clean(data.decode("utf-8", "replace"), name)
        exposition = generate_openmetrics(reg).decode()
    finally:
        obs.shutdown()
    assert_clean(store_dump(db_url), "the store's rows")
    assert_clean(exposition, "the OpenMetrics exposition")
    assert "RuntimeError" in caplog.text
    assert_clean(caplog.text, "the logs")
    spans = fetch(db_url, "spans")
    assert len(spans) == 8  # sequence, parallel, retriever, passthrough, prompt, model, parser; tool
    assert all(s["input"] is None and s["output"] is None for s in spans)
    # shapes, counts and tokens stay
    model = next(s for s in spans if s["kind"] == "llm")
    assert (model["input_tokens"], model["output_tokens"], model["model"]) == (50, 10, "gpt-4o-mini")
    assert model["cost_usd"] is not None
    tool_span = next(s for s in spans if s["kind"] == "tool")
    assert (tool_span["status"], tool_span["error_type"], tool_span["error_message"]) == (
        "error",
        "ValueError",
        None,
    )
    (doc,) = fetch(db_url, "retrieved_documents")
    assert doc["content"] is None and doc["document_id"] == "kb-1" and doc["score"] == 0.9
    assert [r["template"] for r in fetch(db_url, "prompt_versions")] == [None]
    (feedback,) = fetch(db_url, "scores")
    assert feedback["value"] == 1.0 and feedback["comment"] is None


def test_capture_content_false_refuses_a_judge(sqlite_url: str) -> None:
    with pytest.raises(ValueError, match="capture_content=False"):
        LLMObs(sqlite_url, capture_content=False, judge=Judge(scripted(), sample_rate=1.0))


def test_hashed_user_ids_are_keyed_stable_and_replace_every_copy(db_url: str) -> None:
    key = b"k3y-for-tests"
    expected = hmac.new(key, b"u-1", hashlib.sha256).hexdigest()
    with LLMObs(db_url, hash_user_ids=key, prometheus_registry=None) as obs:
        ids = []
        for user in ("u-1", "u-1", "u-2"):
            run_id = uuid.uuid4()
            config = {"callbacks": [obs.langchain_handler()], "run_id": run_id, "metadata": {"user_id": user}}
            rag_chain().invoke("hello", config=config)
            ids.append(str(run_id))
        assert obs.flush()
    spans = fetch(db_url, "spans")
    by_trace = {t: {s["user_id"] for s in spans if s["trace_id"] == t} for t in ids}
    assert by_trace[ids[0]] == by_trace[ids[1]] == {expected}  # stable: per-user analysis works
    (other,) = by_trace[ids[2]]
    assert other != expected and len(other) == 64
    assert all(s["attributes"]["user_id"] == s["user_id"] for s in spans)  # no raw copy left
    assert "u-1" not in store_dump(db_url).replace(expected, "")
    # another key gives other hashes (the HMAC is keyed, not a bare digest anyone can recompute)
    assert expected != hashlib.sha256(b"u-1").hexdigest()


def test_bad_privacy_options_fail_at_construction(sqlite_url: str) -> None:
    with pytest.raises(ValueError, match="unknown redaction detector 'passport'"):
        LLMObs(sqlite_url, redact=["email", "passport"])
    with pytest.raises(TypeError, match="redact="):
        LLMObs(sqlite_url, redact=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty key"):
        LLMObs(sqlite_url, hash_user_ids=b"")


def test_the_spool_written_while_the_database_is_locked_holds_no_secret(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    url = f"sqlite:///{path}"
    obs = LLMObs(
        url,
        redact=True,
        judge=Judge(scripted(JUDGE_REPLY), sample_rate=1.0, workers=1),
        prometheus_registry=None,
        spool_dir=tmp_path / "spool",
        database_timeout_s=0.2,
        replay_interval_s=0.5,
    )
    locker = sqlite3.connect(path, timeout=5, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock: batches are spooled
    try:
        trace_id = run_everything(obs, flush_timeout=1.0)
        spooled = b"".join(p.read_bytes() for p in (tmp_path / "spool").rglob("*") if p.is_file())
        assert trace_id.encode() in spooled  # the trace's rows (spans, documents, scores) wait there
        assert b"[REDACTED:email]" in spooled
        assert_clean(spooled.decode("utf-8", "replace"), "the spool")
    finally:
        locker.execute("COMMIT")
        locker.close()
    try:
        assert obs.flush(timeout=30)  # replayed once the lock is gone
    finally:
        obs.shutdown()
    assert_clean(store_dump(url), "the store's rows")
    assert fetch(url, "spans", span_id=trace_id)[0]["output"].endswith("[REDACTED:secret] to look it up.")


@pytest.mark.parametrize(
    "options", [{"redact": True}, {"capture_content": False}], ids=["redact", "no_content"]
)
def test_llama_index_query_keeps_secrets_out_of_the_store(
    tmp_path: Path, options: dict[str, Any], li_settings: None, clean_dispatcher: None
) -> None:
    url = f"sqlite:///{tmp_path / 'li.db'}"
    with LLMObs(url, prometheus_registry=None, hash_user_ids="key", **options) as obs:
        handle = obs.instrument_llama_index()
        try:
            index = VectorStoreIndex.from_documents(
                [LIDocument(text=DOC_TEXT, id_="kb-1", metadata={"owner": EMAIL})],
                embed_model=MockEmbedding(embed_dim=8),
            )
            # declared attributes are the app's own: kept without redact=, redacted with it
            declared = {"note": PHONE} if options.get("redact") else {}
            with obs.context(user_id="u-1", session_id="s-1", **declared):
                # MockLLM echoes its prompt: the output carries the context and the question
                response = index.as_query_engine(llm=MockLLM()).query(QUESTION)
        finally:
            handle.close()
        assert EMAIL in str(response)  # the app's own result is untouched
        assert obs.flush()
        files = sqlite_files(url)
    for name, data in files.items():
        assert_clean(data.decode("utf-8", "replace"), name)
    assert_clean(store_dump(url), "the store's rows")
    spans = fetch(url, "spans")
    assert {s["framework"] for s in spans} == {"llama_index"} and len(spans) >= 4
    expected_user = hmac.new(b"key", b"u-1", hashlib.sha256).hexdigest()
    llm = next(s for s in spans if s["kind"] == "llm")
    assert {s["user_id"] for s in spans} - {None} == {expected_user}  # (None: building the index)
    assert all(s["user_id"] == expected_user for s in spans if s["trace_id"] == llm["trace_id"])
    if options.get("redact"):
        assert "[REDACTED:email]" in llm["input"] and "[REDACTED:email]" in llm["output"]
    else:
        assert all(s["input"] is None and s["output"] is None for s in spans)


# -- every credential format (tests/secret_corpus.py) ---------------------------------------------

CORPUS_NEEDLES = corpus.needles()
AWS_SECRET = corpus.AWS_SECRET_ACCESS_KEY
CORPUS_ANSWER = (
    f"Set AWS_SECRET_ACCESS_KEY={AWS_SECRET} and post with {corpus.SLACK_TOKEN}; your token is "
    f"{corpus.JWT}.\n{corpus.PEM_KEY}"
)


def assert_no_secret(text: str, where: str) -> None:
    leaked = [n for n in CORPUS_NEEDLES if n in text]
    assert not leaked, f"{len(leaked)} secret values found in {where}: {leaked[:3]}"


class CorpusRetriever(BaseRetriever):
    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list:
        webhook = f"https://hooks.slack.com/services/{corpus.SLACK_WEBHOOK_PATH}"
        return [
            Document(
                page_content=corpus.env_file(),
                metadata={
                    "id": "env-1",
                    "source": corpus.DATABASE_URL,
                    "token": corpus.JWT,
                    "password": corpus.DB_PASSWORD,
                    "notify": webhook,
                },
            ),
            Document(
                page_content=corpus.prose(), metadata={"id": "chat-2", corpus.NPM_TOKEN: "a key as a key"}
            ),
        ]


@tool
def deploy(target: str, api_key: str, connection: str) -> str:
    """Deploy a service."""
    raise PermissionError(
        f"deploy to {target} refused: {connection} / api_key={api_key} / {corpus.GITLAB_TOKEN}"
    )


@tool
def fetch_config(name: str, headers: dict) -> str:
    """Fetch a config."""
    return f"config {name}: STRIPE_SECRET_KEY={corpus.STRIPE_KEY}\n{corpus.OPENSSH_KEY}"


class CorpusLeakyExporter(LeakyExporter):
    def export(self, spans: Any) -> None:
        raise RuntimeError(
            f"sink rejected {corpus.DATABASE_URL} signed with {corpus.AWS_ACCESS_KEY_ID} / {AWS_SECRET}"
        )


def run_corpus(obs: LLMObs, flush_timeout: float = 10.0) -> str:
    """Every format through every path that stores text: chain input and output, a prompt
    template, metadata keys and values, tags, invocation parameters, tool arguments and results,
    a tool's error message, retrieved documents (content and metadata), a feedback comment."""
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", f"Refunds use {corpus.STRIPE_KEY}."),
            ("human", "Context: {context}\nQuestion: {question}"),
        ]
    )
    model = chat(ai(CORPUS_ANSWER, 80, 40)).bind(
        openai_api_key=corpus.OPENAI_KEY, region_token=corpus.SERVICE_TOKEN
    )
    chain = RunnableParallel(context=CorpusRetriever(), question=RunnablePassthrough()) | prompt | model
    run_id = uuid.uuid4()
    config = {
        "callbacks": [obs.langchain_handler()],
        "run_id": run_id,
        "tags": [f"hf:{corpus.HUGGINGFACE_TOKEN}"],
        "metadata": {
            "user_id": "u-1",
            "aws_secret_access_key": AWS_SECRET,
            "stripeApiKey": corpus.CAMEL_API_KEY,
            "deploy_note": f"DB_PASSWORD={corpus.ENV_PASSWORD}",
            corpus.GOOGLE_API_KEY: "a key as a key",
            "db": corpus.DATABASE_URL,
        },
    }
    answer = chain.invoke(corpus.prose(), config=config)
    assert answer.content == CORPUS_ANSWER  # the app's own result is untouched
    handler = {"callbacks": [obs.langchain_handler()]}
    with pytest.raises(PermissionError, match="refused"):
        deploy.invoke(
            {
                "target": "prod",
                "api_key": corpus.HEADER_API_KEY,
                "connection": corpus.AZURE_CONNECTION_STRING,
            },
            config=handler,
        )
    headers = {"Authorization": f"Bearer {corpus.SERVICE_TOKEN}", "X-Api-Key": corpus.CAMEL_API_KEY}
    fetch_config.invoke({"name": "billing", "headers": headers}, config=handler)
    obs.feedback(run_id, 0.0, comment=f"it printed {corpus.SENDGRID_KEY} and {corpus.NPM_TOKEN}!")
    obs.flush(timeout=flush_timeout)
    return str(run_id)


def test_every_credential_format_stays_out_of_the_database_file_wal_metrics_and_logs(
    db_url: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    reg = CollectorRegistry()
    caplog.set_level(logging.DEBUG, logger="llmobs_callbacks")
    spool = tmp_path / "spool"
    obs = LLMObs(
        db_url, redact=True, exporters=[CorpusLeakyExporter()], prometheus_registry=reg, spool_dir=spool
    )
    try:
        trace_id = run_corpus(obs)
        assert obs.flush()
        if db_url.startswith("sqlite"):
            files = sqlite_files(db_url)
            assert any(name.endswith("-wal") for name in files)  # the WAL is scanned too
            for name, data in files.items():
                assert_no_secret(data.decode("utf-8", "replace"), name)
        exposition = generate_openmetrics(reg).decode()
    finally:
        obs.shutdown()
    spooled = [p for p in spool.rglob("*") if p.is_file()] if spool.exists() else []
    for path in spooled:
        assert_no_secret(path.read_bytes().decode("utf-8", "replace"), f"the spool ({path.name})")
    assert_no_secret(store_dump(db_url), "the store's rows")
    assert 'trace_id="' in exposition
    assert_no_secret(exposition, "the OpenMetrics exposition")
    assert "RuntimeError" in caplog.text and "export:CorpusLeakyExporter" in caplog.text
    assert_no_secret(caplog.text, "the logs")
    # Markers where the secrets were; the text around them kept.
    spans = fetch(db_url, "spans", trace_id=trace_id)
    root = next(s for s in spans if s["parent_span_id"] is None)
    assert root["input"].startswith("Here is my key [REDACTED:secret] and the old one [REDACTED:secret];")
    assert "export AWS_SECRET_ACCESS_KEY=[REDACTED:secret]\napi-key: [REDACTED:secret]\n" in root["input"]
    assert "postgresql://orders_app:[REDACTED:secret]@db.internal.example:5432/orders" in root["input"]
    assert root["tags"] == ["hf:[REDACTED:secret]"]
    attributes = root["attributes"]
    assert attributes["aws_secret_access_key"] == attributes["stripeApiKey"] == "[REDACTED:secret]"
    assert attributes["deploy_note"] == "DB_PASSWORD=[REDACTED:secret]"
    assert attributes["[REDACTED:secret]"] == "a key as a key" and attributes["user_id"] == "u-1"
    llm = next(s for s in spans if s["kind"] == "llm")
    assert (
        '"content":"Set AWS_SECRET_ACCESS_KEY=[REDACTED:secret] and post with [REDACTED:secret];'
        in llm["output"]
    )
    assert llm["attributes"]["invocation_params"]["openai_api_key"] == "[REDACTED:secret]"
    assert llm["attributes"]["invocation_params"]["region_token"] == "[REDACTED:secret]"
    assert llm["input_tokens"] == 80  # tokens and cost stay
    docs = {d["document_id"]: d for d in fetch(db_url, "retrieved_documents", trace_id=trace_id)}
    assert docs["env-1"]["content"].startswith("AWS_ACCESS_KEY_ID=[REDACTED:secret]\n")
    assert (
        docs["env-1"]["attributes"]["source"]
        == "postgresql://orders_app:[REDACTED:secret]@db.internal.example:5432/orders"
    )
    assert (
        docs["env-1"]["attributes"]["password"] == docs["env-1"]["attributes"]["token"] == "[REDACTED:secret]"
    )
    tools = {s["name"]: s for s in fetch(db_url, "spans") if s["kind"] == "tool"}
    assert tools["deploy"]["error_type"] == "PermissionError"
    assert tools["deploy"]["error_message"].startswith(
        "deploy to prod refused: DefaultEndpointsProtocol=https;"
    )
    assert '"api_key":"[REDACTED:secret]"' in tools["deploy"]["input"]
    assert "Bearer [REDACTED:secret]" in tools["fetch_config"]["input"]
    (template,) = [r["template"] for r in fetch(db_url, "prompt_versions")]
    assert "Refunds use [REDACTED:secret]." in template
    (feedback,) = fetch(db_url, "scores", trace_id=trace_id)
    assert feedback["comment"] == "it printed [REDACTED:secret] and [REDACTED:secret]!"


def test_every_credential_format_stays_out_of_the_spool_while_the_database_is_locked(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    url = f"sqlite:///{path}"
    obs = LLMObs(
        url,
        redact=True,
        prometheus_registry=None,
        spool_dir=tmp_path / "spool",
        database_timeout_s=0.2,
        replay_interval_s=0.5,
    )
    locker = sqlite3.connect(path, timeout=5, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        trace_id = run_corpus(obs, flush_timeout=1.0)
        spooled = b"".join(p.read_bytes() for p in (tmp_path / "spool").rglob("*") if p.is_file())
        assert trace_id.encode() in spooled and b"[REDACTED:secret]" in spooled
        assert_no_secret(spooled.decode("utf-8", "replace"), "the spool")
    finally:
        locker.execute("COMMIT")
        locker.close()
    try:
        assert obs.flush(timeout=30)
    finally:
        obs.shutdown()
    assert_no_secret(store_dump(url), "the store's rows")
    for name, data in sqlite_files(url).items():
        assert_no_secret(data.decode("utf-8", "replace"), name)


def test_llama_index_query_keeps_every_credential_format_out_of_the_store(
    db_url: str, li_settings: None, clean_dispatcher: None
) -> None:
    with LLMObs(db_url, prometheus_registry=None, redact=True) as obs:
        handle = obs.instrument_llama_index()
        try:
            index = VectorStoreIndex.from_documents(
                [
                    LIDocument(
                        text=corpus.env_file(),
                        id_="env-1",
                        metadata={"token": corpus.JWT, "owner_password": corpus.DB_PASSWORD},
                    )
                ],
                embed_model=MockEmbedding(embed_dim=8),
            )
            # MockLLM echoes its prompt: the output carries the retrieved text and the question
            response = index.as_query_engine(llm=MockLLM()).query(corpus.prose())
        finally:
            handle.close()
        assert AWS_SECRET in str(response)  # the app's own result is untouched
        assert obs.flush()
        files = sqlite_files(db_url) if db_url.startswith("sqlite") else {}
    for name, data in files.items():
        assert_no_secret(data.decode("utf-8", "replace"), name)
    assert_no_secret(store_dump(db_url), "the store's rows")
    spans = fetch(db_url, "spans")
    llm = next(s for s in spans if s["kind"] == "llm")
    assert "AWS_SECRET_ACCESS_KEY=[REDACTED:secret]" in llm["input"]
    assert "owner_password: [REDACTED:secret]" in llm["output"]
    (doc,) = [d for d in fetch(db_url, "retrieved_documents") if d["content"]]
    assert "DB_PASSWORD=[REDACTED:secret]" in doc["content"]
