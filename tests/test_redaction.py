"""Built-in detectors (and what they leave alone), callables, truncation and failing closed."""

from __future__ import annotations

import base64
import hashlib
import itertools
import uuid

import pytest
import secret_corpus as corpus
from conftest import fetch
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.runnables import RunnableLambda

from llmobs_callbacks import LLMObs
from llmobs_callbacks.redaction import BUILTIN_DETECTORS, Redactor, luhn_valid, make_redactor
from llmobs_callbacks.secrets import find_secrets, is_secret_name

ALL = Redactor(BUILTIN_DETECTORS)
SECRETS = Redactor(["secrets"])
S = "[REDACTED:secret]"


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
        ("key sk-proj-abcDEF1234567890xyzXYZ.", "key [REDACTED:secret]."),
        ("sk-ant-api03-AbCdEfGhIjKlMnOp", "[REDACTED:secret]"),
        ("Authorization: Bearer abcdefghijklmnop1234", "Authorization: Bearer [REDACTED:secret]"),
        ("AKIAIOSFODNN7EXAMPLE", "[REDACTED:secret]"),
        ('{"api_key": "abcd1234efgh5678"}', '{"api_key": "[REDACTED:secret]"}'),
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


# -- secrets ------------------------------------------------------------------------------------

SHAPED = [
    "aws_access_key_id",
    "github_token",
    "github_fine_grained_pat",
    "gitlab_token",
    "slack_token",
    "google_api_key",
    "stripe_key",
    "stripe_restricted_key",
    "openai_key",
    "anthropic_key",
    "huggingface_token",
    "sendgrid_key",
    "npm_token",
    "jwt",
    "pem_private_key",
    "openssh_private_key",
]


@pytest.mark.parametrize("fmt", SHAPED)
def test_credentials_are_found_by_their_shape_alone(fmt: str) -> None:
    value = corpus.SECRETS[fmt]
    for text, expected in [
        (f"it is {value}.", f"it is {S}."),
        (f'{{"v": "{value}"}}', f'{{"v": "{S}"}}'),
        (f"({value})", f"({S})"),
        (value, S),
    ]:
        assert SECRETS(text) == expected, text


AWS_SECRET = corpus.AWS_SECRET_ACCESS_KEY


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the two forms, and the other spellings of the same name
        (f"aws_secret_access_key={AWS_SECRET}", f"aws_secret_access_key={S}"),
        (f"AWS_SECRET_ACCESS_KEY={AWS_SECRET} next", f"AWS_SECRET_ACCESS_KEY={S} next"),
        (f"export AWS_SECRET_ACCESS_KEY='{AWS_SECRET}'", f"export AWS_SECRET_ACCESS_KEY='{S}'"),
        (f'{{"aws_secret_access_key": "{AWS_SECRET}"}}', f'{{"aws_secret_access_key": "{S}"}}'),
        (f"aws.secret-access-key: {AWS_SECRET}", f"aws.secret-access-key: {S}"),
        (f"awsSecretAccessKey = {AWS_SECRET}", f"awsSecretAccessKey = {S}"),
        (f'\\"aws_secret_access_key\\": \\"{AWS_SECRET}\\"', f'\\"aws_secret_access_key\\": \\"{S}\\"'),
        # the key 40 characters after its name, as Kubernetes and ECS list environments
        (
            f'{{"name": "AWS_SECRET_ACCESS_KEY", "value": "{AWS_SECRET}"}}',
            f'{{"name": "AWS_SECRET_ACCESS_KEY", "value": "{S}"}}',
        ),
        # *_SECRET*, *_TOKEN, *_PASSWORD, *_API_KEY, their lowercase / dotted / JSON / header forms
        ("MY_APP_SECRET_VALUE=abc123xyz", f"MY_APP_SECRET_VALUE={S}"),
        ("PAYMENTS_SERVICE_TOKEN=Zq81Lm0p", f"PAYMENTS_SERVICE_TOKEN={S}"),
        ("DB_PASSWORD=hunter2", f"DB_PASSWORD={S}"),
        ("MAILGUN_API_KEY: key-3ax6xnjp29jd6fds4gc373sgvjxteol0", f"MAILGUN_API_KEY: {S}"),
        ('{"client_secret":"s3cr3t-value"}', f'{{"client_secret":"{S}"}}'),
        ("api-key: 0123abcd", f"api-key: {S}"),
        ("X-Api-Key: 0123abcd", f"X-Api-Key: {S}"),
        ("spring.datasource.password=Pa55word", f"spring.datasource.password={S}"),
        ("clientSecret := 'abc def ghi'", f"clientSecret := '{S}'"),
        ("<password>hunter2</password>", f"<password>{S}</password>"),
        ('env["DB_PASS"] = "pw-1"', f'env["DB_PASS"] = "{S}"'),
        ("password: hunter2", f"password: {S}"),
        (
            "https://api.example.com/v1?access_token=abc123&page=2",
            f"https://api.example.com/v1?access_token={S}&page=2",
        ),
        (
            "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sig=AbC%2Fd3f%3D&se=2030",
            f"https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sig={S}&se=2030",
        ),
        (
            f"DefaultEndpointsProtocol=https;AccountName=x;AccountKey={corpus.AZURE_ACCOUNT_KEY};EndpointSuffix=core.windows.net",
            f"DefaultEndpointsProtocol=https;AccountName=x;AccountKey={S};EndpointSuffix=core.windows.net",
        ),
        # credentials by scheme and in URLs
        ("Authorization: Bearer abcdefghijklmnop1234", f"Authorization: Bearer {S}"),
        (
            f"Authorization: Basic {base64.b64encode(b'admin:letmein').decode()}",
            f"Authorization: Basic {S}",
        ),
        (corpus.DATABASE_URL, f"postgresql://orders_app:{S}@db.internal.example:5432/orders"),
        ("redis://:p@ss:w0rd@cache:6379/0", f"redis://:{S}@cache:6379/0"),
        (
            "mongodb+srv://svc:Xy7%40z@cluster0.example.net/db",
            f"mongodb+srv://svc:{S}@cluster0.example.net/db",
        ),
        (
            f"https://hooks.slack.com/services/{corpus.SLACK_WEBHOOK_PATH}",
            f"https://hooks.slack.com/services/{S}",
        ),
    ],
)
def test_credentials_are_found_by_their_name(text: str, expected: str) -> None:
    assert SECRETS(text) == expected
    assert ALL(text) == expected  # the other detectors leave the rest alone


@pytest.mark.parametrize(
    "text",
    [
        "The key to a good answer is patience; pass the salt and keep the secret of the recipe.",
        "Password: at least 12 characters, one digit. Token: a unit of text. Secret: keep it.",
        "the bearer of this letter has a basic understanding of tokens",
        f"trace {uuid.uuid4().hex} span {uuid.uuid4()} request 7c9e6679-7448-40b3-a6e0-6c1f5d1a2b3c",
        f"template_hash={hashlib.sha256(b'You are a helpful assistant. {question}').hexdigest()}",
        f"git commit {hashlib.sha1(b'x').hexdigest()} and md5 {hashlib.md5(b'y').hexdigest()}",
        "models: gpt-4o-mini-2024-07-18, claude-3-5-sonnet-20241022, text-embedding-3-small, "
        "anthropic.claude-3-haiku-20240307-v1:0, models/gemini-1.5-pro-002, meta-llama/Llama-3.1-8B-Instruct",
        '{"max_tokens": 256, "prompt_tokens": 12, "total_tokens": 42, "token_usage": {"n": 1}}',
        '{"api_key": "{api_key}", "password": "********", "token": null, "secret": true}',
        "task-based design, risk-free signal, a keyboard shortcut for the passenger seat",
        "https://docs.example.com:8443/guide?page=2 and http://localhost:8080/",
        "sessionid=s-9 user_id=u-42 prompt_version=v3 cache_key=abc123 sort_key=name",
        "the secretary's notes: tokens=150, keys=3",
    ],
)
def test_secrets_leave_ordinary_text_alone(text: str) -> None:
    assert SECRETS(text) == text


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("aws_secret_access_key", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("clientSecret", True),
        ("SECRET", True),
        ("db.password", True),
        ("DB_PASS", True),
        ("db_pwd", True),
        ("GITHUB_TOKEN", True),
        ("refreshToken", True),
        ("x-auth-token", True),
        ("OPENAI_API_KEY", True),
        ("stripeApiKey", True),
        ("apikey", True),
        ("private_key", True),
        ("AccountKey", True),
        ("credentials", True),
        ("X-Amz-Signature", True),
        ("Authorization", True),
        ("max_tokens", False),
        ("token_usage", False),
        ("tokenizer", False),
        ("secretary", False),
        ("passenger", False),
        ("bypass", False),
        ("cache_key", False),
        ("key", False),
        ("session_id", False),
        ("prompt_version", False),
        ("aws_access_key_id", False),  # an id (found by its AKIA shape)
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_a_credential_key_in_metadata_has_its_whole_value_replaced() -> None:
    metadata = {
        "aws_secret_access_key": AWS_SECRET,
        "stripeApiKey": "no-shape-at-all",
        "credentials": {"user": "svc", "pin": 1234},
        corpus.GITHUB_TOKEN: "a token used as a key",
        "max_tokens": 256,
        "secret": None,
        "note": f"DB_PASSWORD={corpus.ENV_PASSWORD}",
    }
    assert ALL.value(metadata) == {
        "aws_secret_access_key": S,
        "stripeApiKey": S,
        "credentials": {"user": S, "pin": S},
        S: "a token used as a key",
        "max_tokens": 256,
        "secret": None,
        "note": f"DB_PASSWORD={S}",
    }
    assert Redactor(["email"]).value({"password": "x"}) == {"password": "x"}  # only with "secrets"


def test_the_former_name_api_key_and_true_select_the_secrets_detector() -> None:
    assert BUILTIN_DETECTORS[0] == "secrets"
    for spec in ("api_key", "api_keys", "bearer", "secrets", ["secrets", "api_key"]):
        r = make_redactor(spec)
        assert r is not None and r.names == ("secrets",), spec
    assert f"key {S}." == make_redactor("api_key")("key sk-proj-abcDEF1234567890xyzXYZ.")  # type: ignore[misc]


def test_redacting_twice_changes_nothing_more() -> None:
    once = ALL(corpus.env_file() + "\n" + corpus.prose())
    assert ALL(once) == once


def test_a_private_key_cut_off_before_its_end_is_redacted_to_the_end() -> None:
    cut = corpus.PEM_KEY[: len(corpus.PEM_KEY) // 2]
    assert SECRETS(f"key:\n{cut}") == f"key:\n{S}"


# Text made of the pieces the detectors look for, glued in any order: the edges of every rule.
_PIECES = st.sampled_from(
    [
        "password",
        "Secret",
        "_TOKEN",
        "api-key",
        "aws",
        "AKIA",
        "ABCDEFGHIJKLMNOP0123",
        "ghp_",
        "sk-",
        "xoxb-",
        "eyJ",
        "hbGciOi",
        ".",
        "=",
        ":",
        ": ",
        "://",
        "u:p@h",
        '"',
        "'",
        "\\",
        "<",
        ">",
        "&",
        ";",
        ",",
        "[",
        "]",
        "{",
        "}",
        " ",
        "\n",
        "Bearer ",
        "Basic ",
        "-----BEGIN RSA PRIVATE KEY-----",
        "x" * 40,
        "aB3/+" * 8,
        "İ",
        "é",
        "0123456789",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=30).map("".join))
def test_secret_spans_are_ordered_within_the_text_and_redaction_never_raises(text: str) -> None:
    spans = find_secrets(text)
    assert all(0 <= a < b <= len(text) for a, b in spans)
    assert all(b1 <= a2 for (_, b1), (a2, _) in itertools.pairwise(spans))  # sorted, disjoint
    assert isinstance(ALL(text), str)
