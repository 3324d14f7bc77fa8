"""Built-in detectors (and what they leave alone), callables, truncation and failing closed."""

from __future__ import annotations

import pytest
from conftest import fetch
from langchain_core.runnables import RunnableLambda

from llmobs_callbacks import LLMObs
from llmobs_callbacks.redaction import BUILTIN_DETECTORS, Redactor, luhn_valid, make_redactor

ALL = Redactor(BUILTIN_DETECTORS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail alice.smith+x@example.co.uk now", "mail [REDACTED:email] now"),
        ("josé@exämple.com", "[REDACTED:email]"),
        ("call +1 415-555-0132", "call [REDACTED:phone]"),
        ("(415) 555-0199 or 415.555.0100", "[REDACTED:phone] or [REDACTED:phone]"),
        ("+44 20 7946 0958", "[REDACTED:phone]"),
        ("card 4111 1111 1111 1111 exp 2029", "card [REDACTED:credit_card] exp 2029"),
        ("4111-1111-1111-1111 2029", "[REDACTED:credit_card] 2029"),  # a year after it
        ("4539578763621486", "[REDACTED:credit_card]"),
        ("key sk-proj-abcDEF1234567890xyzXYZ.", "key [REDACTED:api_key]."),
        ("sk-ant-api03-AbCdEfGhIjKlMnOp", "[REDACTED:api_key]"),
        ("Authorization: Bearer abcdefghijklmnop1234", "Authorization: Bearer [REDACTED:api_key]"),
        ("AKIAIOSFODNN7EXAMPLE", "[REDACTED:api_key]"),
        ('{"api_key": "abcd1234efgh5678"}', '{"api_key": "[REDACTED:api_key]"}'),
        ("from 192.168.1.20.", "from [REDACTED:ip]."),
        ("v6 2001:db8::8a2e:370:7334 and ::1", "v6 [REDACTED:ip] and [REDACTED:ip]"),
        ("loopback ::1 only", "loopback [REDACTED:ip] only"),
        ("fe80:0:0:0:200:f8ff:fe21:67cf", "[REDACTED:ip]"),
        ('{"host":"10.0.0.7","port":"8080"}', '{"host":"[REDACTED:ip]","port":"8080"}'),
    ],
)
def test_builtin_detectors_replace_what_they_name(text: str, expected: str) -> None:
    assert ALL(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "card 4111-1111-1111-1112",  # fails the Luhn check: an order number, not a card
        "order #12345678901234",
        "date 2024-07-18, model gpt-4o-mini-2024-07-18",
        "version 1.2.3 at 12:30:45",
        '{"a":1,"b":"c","max_tokens":256}',
        "ask-me-anything-please-1234567",
        "the @ sign and user@localhost",
    ],
)
def test_builtin_detectors_leave_ordinary_text_alone(text: str) -> None:
    assert ALL(text) == text


def test_luhn() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")


def test_names_callables_and_order() -> None:
    only_email = make_redactor("email")
    assert (
        only_email is not None
        and only_email("a@b.io 4111 1111 1111 1111") == "[REDACTED:email] 4111 1111 1111 1111"
    )
    custom = make_redactor(["emails", lambda s: s.replace("ACME", "[CLIENT]")])
    assert custom is not None and custom("ACME: x@y.org") == "[CLIENT]: [REDACTED:email]"
    assert make_redactor(None) is None and make_redactor(False) is None and make_redactor([]) is None
    assert make_redactor(True).names == BUILTIN_DETECTORS  # type: ignore[union-attr]


def test_a_secret_at_the_truncation_point_is_redacted_not_cut(sqlite_url: str) -> None:
    # cut first, then redacted, this would store "… jane.do…[truncated]"
    text = "x" * 80 + " jane.doe@example.org " + "y" * 30
    with LLMObs(sqlite_url, synchronous=True, redact=["email"], max_content_chars=100) as obs:
        RunnableLambda(lambda s: "ok").invoke(text, config={"callbacks": [obs.langchain_handler()]})
    (row,) = fetch(sqlite_url, "spans")
    assert "jane" not in row["input"] and row["input"].startswith("x" * 80 + " [REDAC")
    assert len(row["input"]) == 100 and row["input"].endswith("…[truncated]")


def test_a_failing_callable_fails_closed_and_is_counted(sqlite_url: str) -> None:
    def broken(text: str) -> str:
        raise RuntimeError("redactor bug")

    with LLMObs(sqlite_url, synchronous=True, redact=broken) as obs:
        out = RunnableLambda(lambda s: s.upper()).invoke(
            "secret", config={"callbacks": [obs.langchain_handler()], "metadata": {"user_id": "u-1"}}
        )
        stats = obs.stats()
    assert out == "SECRET"  # the user's chain is untouched
    (row,) = fetch(sqlite_url, "spans")
    assert row["input"] is None and row["output"] is None and row["attributes"] is None
    assert stats["handler_errors"] == {"redact": 1}
