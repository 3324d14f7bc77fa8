"""Configuration checks at ``LLMObs(...)``, and exit handling (atexit, SIGTERM).

Bad configuration must fail where the user wrote it, with a message saying what to change,
not later inside a chain (where the handler swallows every error by design).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from .processor import QUEUE_FULL_POLICIES


class ConfigurationError(ValueError):
    """An ``LLMObs(...)`` option is invalid, or the database cannot be used."""


def check_options(
    *,
    max_queue_size: object,
    max_batch_size: object,
    flush_interval_s: object,
    open_span_ttl_s: object,
    max_content_chars: object,
    queue_full: object,
    max_attribute_chars: object = 4_096,
    block_timeout_s: object,
    spool_max_bytes: object,
    write_retry_delays_s: object,
    replay_interval_s: object,
    database_timeout_s: object,
    exit_timeout_s: object,
    write_timeout_s: object = 0.25,
    price_overrides: object,
) -> None:
    """Raise ``ConfigurationError`` naming the first invalid option."""
    for name, value in (
        ("max_queue_size", max_queue_size),
        ("max_batch_size", max_batch_size),
        ("max_content_chars", max_content_chars),
        ("max_attribute_chars", max_attribute_chars),
        ("spool_max_bytes", spool_max_bytes),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{name} must be a positive integer, not {value!r}")
    for name, value in (
        ("flush_interval_s", flush_interval_s),
        ("open_span_ttl_s", open_span_ttl_s),
        ("replay_interval_s", replay_interval_s),
        ("database_timeout_s", database_timeout_s),
        ("write_timeout_s", write_timeout_s),
    ):
        _positive_number(name, value)
    for name, value in (("block_timeout_s", block_timeout_s), ("exit_timeout_s", exit_timeout_s)):
        _positive_number(name, value, allow_zero=True)
    if queue_full not in QUEUE_FULL_POLICIES:
        raise ConfigurationError(
            f"queue_full must be 'drop' (count and drop when the queue is full) or 'block' (wait up "
            f"to block_timeout_s), not {queue_full!r}"
        )
    if write_retry_delays_s is not None:
        if isinstance(write_retry_delays_s, str | bytes) or not isinstance(write_retry_delays_s, Sequence):
            raise ConfigurationError(
                f"write_retry_delays_s must be a list of seconds, not {write_retry_delays_s!r}"
            )
        for delay in write_retry_delays_s:
            _positive_number("write_retry_delays_s[...]", delay, allow_zero=True)
        # Accepted so that code written for earlier releases still starts; it changes nothing now.
        warnings.warn(
            "write_retry_delays_s no longer does anything: a failed write is spooled at once and "
            "replayed from the spool (see replay_interval_s); remove the option",
            DeprecationWarning,
            stacklevel=3,
        )
    _check_prices(price_overrides)


def _positive_number(name: str, value: object, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):  # type: ignore[operator]
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(f"{name} must be a finite number of seconds {bound}, not {value!r}")


def _check_prices(overrides: object) -> None:
    """Every override must parse, with finite non-negative USD-per-million rates."""
    if overrides is None:
        return
    if not isinstance(overrides, Mapping):
        raise ConfigurationError(
            f"price_overrides must be a mapping {{model: {{'input': .., 'output': ..}}}}, not {overrides!r}"
        )
    from .pricing import ModelPriceOverride

    for model, price in overrides.items():
        where = f"price_overrides[{model!r}]"
        if not isinstance(model, str) or not model:
            raise ConfigurationError(f"{where}: the model name must be a non-empty string")
        if not isinstance(price, ModelPriceOverride | Mapping):
            raise ConfigurationError(
                f"{where} must be {{'input': .., 'output': .., 'cached_input': .., 'cache_write': ..}} "
                f"in USD per million tokens, not {price!r}"
            )
        try:
            parsed = ModelPriceOverride.parse(price)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"{where}: {exc}") from exc
        for key in ("input", "output", "cached_input", "cache_write"):
            rate = getattr(parsed, key)
            if rate is not None and not (math.isfinite(rate) and rate >= 0):
                raise ConfigurationError(f"{where}[{key!r}] must be a finite price >= 0 (USD per 1M tokens)")


def describe_database_error(url: str, exc: BaseException) -> ConfigurationError:
    """A message saying which database failed, why, and what the options are."""
    try:
        shown = sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as given
        shown = url
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    detail = reason[0] if reason else type(exc).__name__
    return ConfigurationError(
        f"llmobs cannot use the database {shown}: {type(exc).__name__}: {detail}. Check the URL "
        f"(or $LLMOBS_DATABASE_URL); pass require_database=False to start anyway and spool spans "
        f"locally until the database answers."
    )


# -- exit --------------------------------------------------------------------------------------

_SIGTERM_LOCK = threading.Lock()
_SIGTERM_OWNERS: weakref.WeakSet[Any] = weakref.WeakSet()


def _on_sigterm(signum: int, frame: object) -> None:
    owners = list(_SIGTERM_OWNERS)
    # One deadline for all: several instances must not multiply the wait before termination.
    deadline = time.monotonic() + max((o.exit_timeout_s for o in owners), default=0.0)
    for owner in owners:
        with contextlib.suppress(Exception):  # termination must proceed
            owner._on_exit(max(0.0, deadline - time.monotonic()))
    # Chain to the default action: terminate by the signal, exactly as without us.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def install_sigterm_flush(owner: Any) -> bool:
    """On SIGTERM, run ``owner._on_exit(timeout)`` (every live owner), then terminate as before.

    Installed only from the main thread and only when SIGTERM has Python's default disposition
    (an app or server with a handler of its own keeps it; the ``atexit`` flush still runs when
    it exits normally). Returns whether ``owner`` is covered.
    """
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not threading.main_thread():
        return False
    with _SIGTERM_LOCK:
        current = signal.getsignal(signal.SIGTERM)
        if current is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
        elif current is not _on_sigterm:
            return False  # the app's own handler wins
        _SIGTERM_OWNERS.add(owner)
        return True


def remove_sigterm_flush(owner: Any) -> None:
    """``owner`` was shut down: the next SIGTERM has nothing to flush for it."""
    with _SIGTERM_LOCK:
        _SIGTERM_OWNERS.discard(owner)
