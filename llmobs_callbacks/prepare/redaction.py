"""Privacy: redaction of secrets and personal data, hashed user ids, ``capture_content=False``.

Everything here runs on the processor thread (``PrivacyFilter`` is called by the
``SpanPreparer`` after serialisation, before any exporter: store, spool, Prometheus, judge,
further exporters) and on the score writer's thread (comments). The application's thread only
hands over references, so redaction never slows a chain down.

Built-in detectors (``LLMObs(redact=[...])`` by name, ``redact=True`` for all of them):

- ``secrets`` (also accepted: ``api_key``, its former name): credentials by their shape (AWS,
  GitHub, GitLab, Slack, Google, Stripe, OpenAI/Anthropic, npm, PyPI, Hugging Face, SendGrid,
  Square keys and tokens, JWTs, PEM/PuTTY private keys), by their name (``NAME=…``, ``"name":
  "…"``, ``name: …`` for ``*secret*``, ``*password*``, ``*token``, ``*api_key`` and similar
  names; the whole value of such a key in metadata), ``Bearer``/``Basic`` credentials and URL
  passwords (``postgresql://user:…@host``); see ``secrets.py``;
- ``email``: e-mail addresses;
- ``credit_card``: 13-19 digit numbers (spaces or dashes allowed) passing the Luhn check only;
- ``ip``: IPv4 (octets checked) and IPv6 addresses (validated by ``ipaddress``);
- ``phone``: numbers written with a ``+`` country code, and North-American ``(555) 123-4567``
  forms; other national formats need a callable.

A callable ``str -> str`` (or several) may be given as well; it runs after the built-ins.
Detectors are precompiled regular expressions behind cheap pre-checks (``"@" in text``, a
literal the regex engine finds by fast substring search, …); card, phone and IPv4 detection
share one pass that finds runs of digits and separators, and only those short runs meet the
specific patterns and the Luhn check. A match is
replaced by ``[REDACTED:<name>]`` (``[REDACTED:secret]`` for credentials; a callable decides
its own replacement).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .secrets import is_secret_name, redact_secrets
from .serialize import truncate

if TYPE_CHECKING:
    from ..diagnostics import Diagnostics
    from ..model import SpanRecord

RedactFn = Callable[[str], str]
RedactSpec = bool | str | RedactFn | Sequence[str | RedactFn] | None

# Text is cut to ``max_content_chars`` only after redaction, so a secret straddling the cut is
# still recognised whole. The preparer keeps this much more than the limit for that.
CONTENT_MARGIN = 512
REDACTION_FAILED = "[REDACTION FAILED]"
_HASH_CACHE_MAX = 10_000
_CACHED_CHARS = 256  # Redactor remembers the redaction of strings up to this long …
_CACHE_ENTRIES = 4096  # … this many of them
_TEMPLATE_CACHE_MAX = 1024


def marker(name: str) -> str:
    return f"[REDACTED:{name}]"


SECRET_MARKER = marker("secret")


# -- detectors --------------------------------------------------------------------------------

# Patterns start with a literal or a character class, never a lookbehind: that lets the regex
# engine skip quickly to candidate positions (a leading lookbehind makes it try every position,
# ~0.3 µs per character). Boundaries are checked in the replacement callbacks instead.
_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}(?![\w-])")

_CARD_RUN = re.compile(r"\d(?:[ -]?\d){12,}")  # greedy: a whole run of digits at once
_CARD_SEPARATORS = re.compile(r"[ -]")
_DIGITS13 = re.compile(r"\d(?:[ -]?\d){12}")

_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
_IPV6 = re.compile(r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:]*")

_PHONE_INTL = re.compile(r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?)(?:[ .-]?\d{2,5}){1,5}")
_PHONE_NANP = re.compile(r"(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}")


def _bounded(match: re.Match[str], before: str, after: str) -> bool:
    """The match is not part of a longer token: no char of ``before`` just before it, none of
    ``after`` just after (``\\w`` stands for any word character)."""
    text, start, end = match.string, match.start(), match.end()
    if start > 0:
        c = text[start - 1]
        if c in before or ("\\w" in before and (c.isalnum() or c == "_")):
            return False
    if end < len(text):
        c = text[end]
        if c in after or ("\\w" in after and (c.isalnum() or c == "_")):
            return False
    return True


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies (a few lines: no dependency)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _cards(match: re.Match[str]) -> str:
    """A run of 13+ digits (with spaces/dashes): replace each group-aligned 13-19 digit part
    that passes the Luhn check (a card followed by an expiry year is still found)."""
    run = match.group(0)
    groups = _CARD_SEPARATORS.split(run)
    seps = _CARD_SEPARATORS.findall(run)
    out: list[str] = []
    i = 0
    n = len(groups)
    while i < n:
        found = -1
        digits = ""
        for j in range(i, n):
            digits += groups[j]
            if len(digits) > 19:
                break
            if len(digits) >= 13 and luhn_valid(digits):
                found = j
        if found >= 0:
            out.append(marker("credit_card"))
            if found < n - 1:
                out.append(seps[found])
            i = found + 1
        else:
            out.append(groups[i])
            if i < n - 1:
                out.append(seps[i])
            i += 1
    return "".join(out)


def _ipv4(match: re.Match[str]) -> str:
    text = match.group(0)
    if not _bounded(match, ".\\w", "\\w") or (
        match.end() + 1 < len(match.string)
        and match.string[match.end()] == "."
        and match.string[match.end() + 1].isdigit()
    ):
        return text  # part of a longer dotted number (a version, an OID)
    if all(int(octet) <= 255 for octet in text.split(".")):
        return marker("ip")
    return text


def _ipv6(match: re.Match[str]) -> str:
    text = match.group(0)
    if not _bounded(match, ".:\\w", "\\w"):
        return text
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return text  # times (12:30:45), JSON fragments, …
    return marker("ip")


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    if not _bounded(match, "+(\\w", "\\w"):
        return text
    digits = sum(c.isdigit() for c in text)
    return marker("phone") if 7 <= digits <= 15 else text


_HEX_OR_COLON = frozenset("0123456789abcdefABCDEF:")


def _has_ipv6_hint(text: str) -> bool:
    """Two colons at most five characters apart, the first after a hex digit or a colon (JSON
    text has colons everywhere, but far apart)."""
    if "::" in text:  # compressed forms (::1, fe80::1)
        return True
    find = text.find
    i = find(":")
    while i != -1:
        j = find(":", i + 1, i + 6)
        if j != -1 and (i == 0 or text[i - 1] in _HEX_OR_COLON):
            return True
        i = find(":", i + 1)
    return False


@dataclass(frozen=True)
class _Step:
    name: str
    pattern: re.Pattern[str]
    replacement: str | Callable[[re.Match[str]], str]
    precheck: Callable[[str], bool]

    def __call__(self, text: str) -> str:
        if not self.precheck(text):
            return text
        return self.pattern.sub(self.replacement, text)


# Digits with separators, 7+ characters: every card number, phone number and IPv4 address is
# one such run. One pass over the text finds the runs; the specific patterns (and the Luhn
# check) then run on those few short runs only, not over the whole text once each.
_NUMERIC_RUN = re.compile(r"[\d+(][\d ().+-]{5,}\d")


class _NumericStep:
    def __init__(self, card: bool, ip: bool, phone: bool) -> None:
        self.card, self.ip, self.phone = card, ip, phone

    def __call__(self, text: str) -> str:
        return _NUMERIC_RUN.sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        run = match.group(0)
        if self.card and _DIGITS13.search(run) is not None:
            run = _CARD_RUN.sub(_cards, run)  # first: a card would also look like a phone
        if self.ip and "." in run:
            run = _IPV4.sub(_ipv4, run)
        if self.phone:
            if "+" in run:
                run = _PHONE_INTL.sub(_phone, run)
            run = _PHONE_NANP.sub(_phone, run)
        return run


class _SecretsStep:
    """Credentials by shape, by name and in URLs (``secrets.py``): one pass finds the spans."""

    name = "secrets"

    def __call__(self, text: str) -> str:
        return redact_secrets(text, SECRET_MARKER)


# Text-wide steps per detector; card, IPv4 and phone numbers share the one numeric step, which
# runs after secrets (keys contain digits, URL passwords precede an "@") and e-mails, before IPv6.
_DETECTORS: dict[str, tuple[Callable[[str], str], ...]] = {
    "secrets": (_SecretsStep(),),
    "email": (_Step("email", _EMAIL, marker("email"), lambda t: "@" in t),),
    "credit_card": (),
    "ip": (_Step("ip", _IPV6, _ipv6, _has_ipv6_hint),),
    "phone": (),
}
BUILTIN_DETECTORS: tuple[str, ...] = tuple(_DETECTORS)
_ALIASES = {
    # "api_key" was the name of the credentials detector before it grew into "secrets".
    "api_key": "secrets",
    "api_keys": "secrets",
    "bearer": "secrets",
    "secret": "secrets",
    "credentials": "secrets",
    "passwords": "secrets",
    "tokens": "secrets",
    "emails": "email",
    "credit_cards": "credit_card",
    "card": "credit_card",
    "ips": "ip",
    "ip_address": "ip",
    "phone_number": "phone",
    "phones": "phone",
    "phone_numbers": "phone",
}


class Redactor:
    """``Redactor(["email", "credit_card", my_fn])("…")`` → the text with matches replaced."""

    def __init__(self, detectors: Iterable[str | RedactFn]) -> None:
        names: list[str] = []
        self._callables: list[RedactFn] = []
        for item in detectors:
            if isinstance(item, str):
                name = _ALIASES.get(item, item)
                if name not in _DETECTORS:
                    raise ValueError(
                        f"unknown redaction detector {item!r}; built-in: {', '.join(BUILTIN_DETECTORS)}"
                    )
                if name not in names:
                    names.append(name)
            elif callable(item):
                self._callables.append(item)
            else:
                raise TypeError(f"redact= takes detector names or callables str -> str, not {item!r}")
        # Built-ins always run in their canonical order, whatever order they were named in.
        steps: list[Callable[[str], str]] = [
            *(step for name in ("secrets", "email") if name in names for step in _DETECTORS[name])
        ]
        if {"credit_card", "ip", "phone"} & set(names):
            steps.append(_NumericStep("credit_card" in names, "ip" in names, "phone" in names))
        if "ip" in names:
            steps.extend(_DETECTORS["ip"])
        self._steps = tuple(steps)
        self.names = tuple(n for n in BUILTIN_DETECTORS if n in names)
        self._secret_keys = "secrets" in names
        # Short strings recur in every span (metadata keys and values, tags, model names):
        # their built-in redaction is remembered. Callables run every time (they may not be pure).
        self._cache: dict[str, str] = {}

    def _builtins(self, text: str) -> str:
        for step in self._steps:
            text = step(text)
        return text

    def __call__(self, text: str) -> str:
        if len(text) <= _CACHED_CHARS:
            done = self._cache.get(text)
            if done is None:
                done = self._builtins(text)
                if len(self._cache) >= _CACHE_ENTRIES:
                    self._cache.clear()
                self._cache[text] = done
            text = done
        else:
            text = self._builtins(text)
        for fn in self._callables:
            text = fn(text)
            if not isinstance(text, str):
                raise TypeError(f"a redact callable returned {type(text).__name__}, not str")
        return text

    def value(self, value: Any, max_chars: int = 0) -> Any:
        """Redact every string (keys included) of a JSON-like structure of dicts and lists, then
        cut it to ``max_chars`` (0: no cut). With ``secrets``, a key that names a credential
        (``{"aws_secret_access_key": …}``, see ``secrets.is_secret_name``) has its whole value
        replaced, whatever it looks like."""
        if isinstance(value, str):
            return truncate(self(value), max_chars)
        if isinstance(value, dict):
            out: dict[Any, Any] = {}
            for k, v in value.items():
                if isinstance(k, str):
                    if self._secret_keys and v is not None and not isinstance(v, bool) and is_secret_name(k):
                        v = _masked(v)
                    k = truncate(self(k), max_chars)
                out[k] = self.value(v, max_chars)
            return out
        if isinstance(value, list):
            return [self.value(v, max_chars) for v in value]
        return value


def _masked(value: Any) -> Any:
    """Every scalar under a credential's key becomes the marker (the structure stays)."""
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if value is None or isinstance(value, bool):
        return value
    return SECRET_MARKER


def make_redactor(spec: RedactSpec) -> Redactor | None:
    """``redact=`` of ``LLMObs``: None/False (off), True (every built-in), a name, a callable,
    or a list of names and callables. Unknown names raise ``ValueError`` at once."""
    if spec is None or spec is False:
        return None
    if spec is True:
        return Redactor(BUILTIN_DETECTORS)
    if isinstance(spec, str) or callable(spec):
        return Redactor([spec])
    if isinstance(spec, (list, tuple, set, frozenset)):
        return Redactor(list(spec)) if spec else None
    raise TypeError(f"redact= takes True, detector names and/or callables, not {type(spec).__name__}")


def hash_user_id(key: bytes, user_id: str) -> str:
    """Keyed HMAC-SHA256 (hex) of a user id: stable for one key, so per-user analysis works."""
    return hmac.new(key, user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


# -- the preparer's hook ------------------------------------------------------------------------


class PrivacyFilter:
    """Applies ``capture_content``, ``redact`` and ``hash_user_ids`` to prepared spans and to
    score comments. Fails closed: a span whose redaction raises loses its texts (counted as
    ``llmobs_handler_errors_total{reason="redact"}``), it is never stored unredacted."""

    def __init__(
        self,
        diagnostics: Diagnostics,
        *,
        redactor: Redactor | None = None,
        hash_key: bytes | None = None,
        capture_content: bool = True,
        max_content_chars: int = 16_000,
        max_attribute_chars: int = 4_096,
    ) -> None:
        self._diag = diagnostics
        self.redactor = redactor
        self._hash_key = hash_key
        self.capture_content = capture_content
        self._max = max_content_chars
        self._max_attribute = max_attribute_chars
        self._hashes: dict[str, str] = {}
        self._templates: dict[str, str] = {}

    @classmethod
    def create(
        cls,
        diagnostics: Diagnostics,
        *,
        redact: RedactSpec = None,
        hash_user_ids: bytes | str | None = None,
        capture_content: bool = True,
        max_content_chars: int = 16_000,
        max_attribute_chars: int = 4_096,
    ) -> PrivacyFilter | None:
        """The filter for these options, or None when there is nothing to do (the default)."""
        redactor = make_redactor(redact)
        if hash_user_ids is not None and not isinstance(hash_user_ids, (bytes, str)):
            raise TypeError("hash_user_ids= takes the HMAC key as bytes or str")
        key = hash_user_ids.encode("utf-8") if isinstance(hash_user_ids, str) else hash_user_ids
        if key is not None and len(key) == 0:
            raise ValueError("hash_user_ids= needs a non-empty key")
        if redactor is None and key is None and capture_content:
            return None
        return cls(
            diagnostics,
            redactor=redactor,
            hash_key=key,
            capture_content=capture_content,
            max_content_chars=max_content_chars,
            max_attribute_chars=max_attribute_chars,
        )

    @property
    def content_margin(self) -> int:
        """Extra characters the preparer keeps (in texts and in attribute strings) so redaction
        sees secrets at the cut whole; this filter then cuts to the configured limits."""
        return CONTENT_MARGIN if self.redactor is not None and self._max > 0 else 0

    # -- spans (processor thread) -----------------------------------------------------------

    def __call__(self, spans: Sequence[SpanRecord]) -> None:
        for span in spans:
            try:
                self._apply(span)
            except Exception as exc:  # noqa: BLE001 - fail closed, never store unredacted text
                self._diag.handler_error("redact", exc)
                _wipe(span)

    def _apply(self, span: SpanRecord) -> None:
        if self._hash_key is not None:
            if span.user_id is not None:
                span.user_id = self.hash_user_id(span.user_id)
            if span.metadata and isinstance(span.metadata.get("user_id"), str):
                span.metadata["user_id"] = self.hash_user_id(span.metadata["user_id"])
        if not self.capture_content:
            # Exception messages quote inputs and outputs (parsers, validators): the type stays.
            # Document metadata is retrieved data too (owners, paths): id, rank and score stay.
            span.error_message = None
            for doc in span.documents or ():
                doc.metadata = None
        r = self.redactor
        if r is None:
            return
        span.input = self._content(span.input)
        span.output = self._content(span.output)
        if span.error_message:
            span.error_message = r(span.error_message)
        if span.session_id:
            span.session_id = r(span.session_id)
        if span.user_id and self._hash_key is None:
            span.user_id = r(span.user_id)
        cut = self._max_attribute
        if span.tags:
            span.tags = [truncate(r(t), cut) if isinstance(t, str) else t for t in span.tags]
        if span.metadata:
            user_id = span.metadata.get("user_id") if self._hash_key is not None else None
            span.metadata = r.value(span.metadata, cut)
            if user_id is not None:
                span.metadata["user_id"] = user_id  # already a keyed hash
        if span.invocation_params:
            span.invocation_params = r.value(span.invocation_params, cut)
        for doc in span.documents or ():
            doc.content = self._content(doc.content)
            if doc.metadata:
                doc.metadata = r.value(doc.metadata, cut)
            if doc.document_id:
                doc.document_id = r(doc.document_id)
        template = span.prompt_template
        if template is not None and template.template:
            redacted = self._template(template.template)
            if redacted != template.template:
                # Templates are shared between spans (cached by the adapters): copy, never mutate.
                span.prompt_template = replace(template, template=redacted)

    def _content(self, text: Any) -> Any:
        if not isinstance(text, str):
            return text
        return truncate(self.redactor(text), self._max)  # type: ignore[misc]

    def _template(self, text: str) -> str:
        redacted = self._templates.get(text)
        if redacted is None:
            redacted = self.redactor(text)  # type: ignore[misc]
            if len(self._templates) >= _TEMPLATE_CACHE_MAX:
                self._templates.clear()
            self._templates[text] = redacted
        return redacted

    def hash_user_id(self, user_id: Any) -> str:
        user_id = user_id if isinstance(user_id, str) else str(user_id)
        hashed = self._hashes.get(user_id)
        if hashed is None:
            hashed = hash_user_id(self._hash_key, user_id)  # type: ignore[arg-type]
            if len(self._hashes) >= _HASH_CACHE_MAX:
                self._hashes.clear()
            self._hashes[user_id] = hashed
        return hashed

    # -- scores and logs ----------------------------------------------------------------------

    def score_row(self, row: dict[str, Any]) -> None:
        """A ``scores`` row (user feedback, judge reasons, rules) before it is written; its
        ``user_id`` is treated as a span's (hashed, else redacted), so the two still join."""
        user_done = False
        try:
            user_id = row.get("user_id")
            if isinstance(user_id, str):
                if self._hash_key is not None:
                    row["user_id"] = self.hash_user_id(user_id)
                elif self.redactor is not None:
                    row["user_id"] = self.redactor(user_id)
            user_done = True
            comment = row.get("comment")
            if comment is not None:
                if not self.capture_content:
                    row["comment"] = None  # free text from the user or a judge quoting the trace
                elif self.redactor is not None:
                    row["comment"] = self.redactor(str(comment))
        except Exception as exc:  # noqa: BLE001 - fail closed
            self._diag.handler_error("redact", exc)
            row["comment"] = None
            if not user_done:
                row["user_id"] = None  # never stored in clear; counted as anonymous feedback

    def log_text(self, text: str) -> str:
        """What a log line may say of an exception message."""
        if not self.capture_content:
            return "<message not logged: capture_content=False>"
        if self.redactor is None:
            return text
        try:
            return self.redactor(text)
        except Exception:  # noqa: BLE001
            return REDACTION_FAILED

    def describe_exception(self, exc: BaseException) -> str:
        """Type, scrubbed message and our frames (never the raw message) for a log line."""
        try:
            message = str(exc)
        except Exception:  # noqa: BLE001
            message = ""
        frames = "".join(traceback.format_tb(exc.__traceback__))
        return f"{type(exc).__name__}: {self.log_text(message)}\n{frames}"


def _wipe(span: SpanRecord) -> None:
    span.input = span.output = span.error_message = None
    span.metadata = span.invocation_params = None
    span.tags = None
    span.session_id = None
    if span.user_id is not None:
        span.user_id = REDACTION_FAILED
    span.documents = None
    if span.prompt_template is not None:
        span.prompt_template = replace(span.prompt_template, template=None)


__all__ = [
    "BUILTIN_DETECTORS",
    "PrivacyFilter",
    "RedactSpec",
    "Redactor",
    "hash_user_id",
    "luhn_valid",
    "make_redactor",
]
