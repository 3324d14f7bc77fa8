"""Bad configuration fails at ``LLMObs(...)`` with a message naming the problem."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import pytest

from llmobs_callbacks import ConfigurationError, Judge, LLMObs


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed


def test_unreachable_postgres_is_a_clear_error() -> None:
    url = f"postgresql+psycopg://postgres:hunter2@127.0.0.1:{_closed_port()}/test"
    with pytest.raises(ConfigurationError) as err:
        LLMObs(url, prometheus_registry=None)
    message = str(err.value)
    assert "cannot use the database postgresql+psycopg://postgres:***@127.0.0.1" in message
    assert "refused" in message.lower()
    assert "require_database=False" in message  # says what the alternative is
    assert "hunter2" not in message


def test_a_sqlite_path_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file, where the database's directory should be")
    with pytest.raises(ConfigurationError, match=r"cannot use the database sqlite:///.*not-a-directory"):
        LLMObs(f"sqlite:///{blocker}/llmobs.db", prometheus_registry=None)


def test_a_malformed_url_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="cannot use the database"):
        LLMObs("not a url", prometheus_registry=None)


def test_an_unknown_option_names_itself(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="max_queue"):
        LLMObs(f"sqlite:///{tmp_path / 'x.db'}", max_queue=10)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_queue_size", -1),
        ("max_queue_size", 0),
        ("max_queue_size", "1000"),
        ("max_batch_size", 0),
        ("max_content_chars", -5),
        ("spool_max_bytes", 0),
        ("flush_interval_s", 0),
        ("open_span_ttl_s", math.nan),
        ("block_timeout_s", -1.0),
        ("exit_timeout_s", -1),
        ("database_timeout_s", math.inf),
        ("replay_interval_s", "5s"),
        ("write_retry_delays_s", [-1.0]),
        ("write_retry_delays_s", "0.1"),
        ("queue_full", "wait"),
    ],
)
def test_bad_values_fail_before_anything_is_created(tmp_path: Path, option: str, value: object) -> None:
    db = tmp_path / "x.db"
    with pytest.raises(ConfigurationError, match=option):
        LLMObs(f"sqlite:///{db}", prometheus_registry=None, **{option: value})
    assert not db.exists()  # checked before touching the database


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"my-model": {"input": "two dollars", "output": 1.0}}, "price_overrides['my-model']"),
        ({"my-model": {"inputs": 1.0, "output": 1.0}}, "unknown price keys"),
        ({"my-model": {"input": 1.0}}, "needs at least 'input' and 'output'"),
        ({"my-model": 2.5}, "price_overrides['my-model'] must be"),
        ({"my-model": {"input": -1.0, "output": 1.0}}, "'input'] must be a finite price >= 0"),
        ({"my-model": {"input": 1.0, "output": math.nan}}, "'output'] must be a finite price >= 0"),
        ({"": {"input": 1.0, "output": 1.0}}, "model name must be a non-empty string"),
        ([("my-model", 1.0)], "price_overrides must be a mapping"),
    ],
)
def test_bad_price_overrides_fail_at_construction(tmp_path: Path, overrides: object, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        LLMObs(f"sqlite:///{tmp_path / 'x.db'}", prometheus_registry=None, price_overrides=overrides)
    assert fragment in str(err.value)


def test_a_malformed_judge_budget_fails_before_the_chain_runs() -> None:
    with pytest.raises(ValueError, match="budget_usd_per_day"):
        Judge(llm=lambda prompt: "{}", budget_usd_per_day=-1.0)


def test_good_options_are_accepted(tmp_path: Path) -> None:
    obs = LLMObs(
        f"sqlite:///{tmp_path / 'x.db'}",
        prometheus_registry=None,
        queue_full="block",
        block_timeout_s=0.0,
        price_overrides={"my-model": {"input": 0, "output": 1}},
    )
    assert obs.flush(timeout=5)
    obs.shutdown()


def test_the_retired_retry_option_still_starts_and_says_it_does_nothing(tmp_path: Path) -> None:
    with pytest.warns(DeprecationWarning, match="write_retry_delays_s no longer does anything"):
        obs = LLMObs(f"sqlite:///{tmp_path / 'x.db'}", prometheus_registry=None, write_retry_delays_s=(0.05,))
    assert obs.flush(timeout=5)
    obs.shutdown()
