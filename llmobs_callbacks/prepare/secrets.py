"""Where the credentials in a text are: by their shape, by their name, in URLs.

Used by ``redaction.py`` (the ``"secrets"`` detector, on the processor thread). ``find_secrets``
returns the character spans to replace; ``is_secret_name`` tells whether a key or variable name
names a credential (``AWS_SECRET_ACCESS_KEY``, ``"client_secret"``, ``api-key``, ``db.password``).

Found **by shape** (a token must not be glued to a longer word): AWS access key ids
(``AKIA``/``ASIA``/``ABIA``/``ACCA``/``A3T…`` + 16), GitHub (``ghp_``/``gho_``/``ghu_``/``ghs_``/
``ghr_``, ``github_pat_``), GitLab (``glpat-`` and the other ``gl…-`` tokens), Slack (``xox[abposr]-``,
``xapp-``, webhook URLs), Google API keys (``AIza`` + 35), Stripe secret and restricted keys
(``sk_live_``/``rk_live_``/``…_test_``, ``whsec_``), OpenAI / Anthropic ``sk-…`` keys, npm
(``npm_``), PyPI (``pypi-``), Hugging Face (``hf_``), SendGrid (``SG.…``), Square (``sq0atp-``/
``sq0csp-``), JWTs (``eyJ….eyJ…[.…]``), PEM and PuTTY private key blocks (the whole block, or up
to the end of the text when its end was cut off), Discord webhook URLs and the password of a URL
(``postgresql://user:pass@host``).

Found **by name**: the value after ``NAME=``, ``NAME: ``, ``"NAME": "…"``, ``NAME := …``,
``<NAME>…</NAME>`` when the name is a credential's (see ``is_secret_name``: ``*secret*``,
``*password*``/``*passwd*``/``*pwd``/``*_pass``, ``*token``, ``*api_key``/``apikey`` and the
``*_key`` names of detect-secrets' keyword list (``private_key``, ``access_key``, ``AccountKey``
of Azure connection strings, …), ``*credentials``, ``*signature``/``sig`` (signed URLs, Azure
SAS)); ``Bearer …`` / ``Basic …`` credentials; and an AWS secret access key (40 characters)
within 40 characters after an ``aws…key``/``…secret``/``…token`` name (``{"name":
"AWS_SECRET_ACCESS_KEY", "value": "…"}``), as detect-secrets' AWS plugin does.

An AWS secret access key is also found, named or not, as a random-looking 40-character string
within 200 characters of an access key id (they travel in pairs).

Not found: a bare 40-character AWS secret key or 88-character Azure storage key with neither a
name nor a key id near it (it cannot be told from other base64 without scanning every word,
which would double the cost of this module), a key without a distinctive prefix printed without
its name (``key 3f9a…``), and formats without a distinctive prefix (Mailchimp, Twilio, Telegram,
…): a callable can add them.

Speed: every detector starts from a literal the regex engine finds with its fast substring
search (``_``, ``-``, ``A``, ``eyJ``, ``://``, ``PRIVATE KEY``, a handful of lowercase name
fragments); only there do the specific patterns run. A pattern that starts with a character
class would make the engine try every position (~30 µs per kB); see README "Privacy" for the
measured cost.

The patterns are adapted from detect-secrets 1.5.0 (https://github.com/Yelp/detect-secrets,
Copyright 2017-2018 Yelp Inc., Apache License 2.0): its plugins ``aws``, ``azure_storage_key``,
``basic_auth``, ``github_token``, ``gitlab_token``, ``jwt``, ``keyword`` (itself after bandit,
Copyright 2014 Hewlett-Packard Development Company, L.P., MIT), ``npm``, ``openai``,
``private_key`` (after pre-commit-hooks, Copyright 2014 pre-commit dev team, MIT),
``pypi_token``, ``sendgrid``, ``slack``, ``square_oauth`` and ``stripe``. Changed here: the
patterns are anchored on literals and merged by anchor for speed, lengths are lower bounds (newer
keys are longer), keyword values need no quotes, URL passwords may contain ``@``, the AWS
secret key rule allows any characters between the name and the key.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections import Counter
from functools import lru_cache

# -- by shape -----------------------------------------------------------------------------------

# Each regex starts with one literal character (fast search); a lookbehind then checks the rest
# of the prefix. Lookbehinds inside one group must have one width, hence the groups by length.
_UNDERSCORE = re.compile(
    r"_(?:(?<=gh[pousr]_)|(?<=github_pat_)|(?<=[rs]k_live_)|(?<=[rs]k_test_)|(?<=npm_)|(?<=hf_)"
    r"|(?<=whsec_))[A-Za-z0-9_]{16,}"
)
# (prefix, shortest token after it): checked longest prefix first
_UNDERSCORE_PREFIXES = (
    ("github_pat_", 22),
    ("sk_live_", 24),
    ("rk_live_", 24),
    ("sk_test_", 24),
    ("rk_test_", 24),
    ("whsec_", 24),
    ("ghp_", 20),
    ("gho_", 20),
    ("ghu_", 20),
    ("ghs_", 20),
    ("ghr_", 20),
    ("npm_", 36),
    ("hf_", 30),
)
_DASH = re.compile(
    r"-(?:(?<=sk-)|(?<=xox[abposr]-)|(?<=xapp-)|(?<=pypi-)|(?<=gl(?:pat|ptt|imt|cbt|oas)-)"
    r"|(?<=gl(?:dt|ft|rt)-)|(?<=glsoat-)|(?<=glagent-)|(?<=sq0(?:atp|csp)-))[A-Za-z0-9_-]{10,}"
)
_DASH_PREFIXES = (
    ("glagent-", 50),
    ("glsoat-", 20),
    ("sq0atp-", 22),
    ("sq0csp-", 22),
    ("glpat-", 20),
    ("glptt-", 20),
    ("glimt-", 20),
    ("glcbt-", 20),
    ("gloas-", 20),
    ("pypi-", 50),
    ("xapp-", 10),
    ("gldt-", 20),
    ("glft-", 20),
    ("glrt-", 20),
    ("xoxa-", 10),
    ("xoxb-", 10),
    ("xoxp-", 10),
    ("xoxo-", 10),
    ("xoxs-", 10),
    ("xoxr-", 10),
    ("sk-", 16),
)
_AWS_ID_OR_GOOGLE = re.compile(r"A(?:(?:KIA|SIA|BIA|CCA|3T[A-Z0-9])[0-9A-Z]{16}|Iza[0-9A-Za-z_-]{35})")
_AWS_PAIR_WINDOW = 200
_AWS_SECRET_KEY = re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
# Possessive runs, and a bounded header (JWT headers are short): a long run of token
# characters after an "eyJ" must not be read again from every position inside it.
_JWT = re.compile(
    r"eyJ[A-Za-z0-9_-]{8,400}+={0,2}\.eyJ[A-Za-z0-9_-]{4,}+={0,2}(?:\.[A-Za-z0-9_+/-]*+={0,2})?"
)
_SENDGRID = re.compile(r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}")
_PEM = re.compile(
    r"(?s)-{4,5} ?BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)? ?-{4,5}"
    r".*?(?:-{4,5} ?END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)? ?-{4,5}|\Z)"
)
_PUTTY = re.compile(r"(?s)PuTTY-User-Key-File-\d.*?(?:Private-MAC: *[0-9A-Fa-f]+|\Z)")
# After "://": a password (the last "@" before the host wins: passwords may hold one), Slack
# and Discord webhook paths.
_URL = re.compile(
    r"://(?:[^\s:/?#@\"'<>\\]*:(?P<password>[^\s/?#\"'<>\\]+)@(?=[^\s/?#@\"'<>\\])"
    r"|hooks\.slack\.com/services/(?P<slack>[A-Za-z0-9_/]+)"
    r"|(?:[\w-]+\.)?discord(?:app)?\.com/api/webhooks/(?P<discord>[\w/-]+))"
)

# Bits per character: 40 random base64 characters give ~4.8; detect-secrets flags base64 at 4.5,
# lowered a little for 40 characters.
_RANDOM_ENTROPY = 4.2
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_TOKEN_CHARS_DASH = _TOKEN_CHARS | {"_", "-"}


def _random_looking(value: str) -> bool:
    """Upper- and lowercase letters and digits, and the character entropy of random base64
    (``ThisIsAVeryLongIdentifierName…`` and hex digests are not)."""
    if not (any(c.isupper() for c in value) and any(c.islower() for c in value)):
        return False
    if not any(c.isdigit() for c in value):
        return False
    n = len(value)
    entropy = -sum(k / n * math.log2(k / n) for k in Counter(value).values())
    return entropy >= _RANDOM_ENTROPY


def _glued(text: str, start: int, chars: frozenset[str] = _TOKEN_CHARS) -> bool:
    """The token at ``start`` continues a longer word (``ask-…``, ``TAKIA…``): not a key."""
    return start > 0 and text[start - 1] in chars


def _prefixed(
    text: str, match: re.Match[str], prefixes: tuple[tuple[str, int], ...]
) -> tuple[int, int] | None:
    anchor = match.start() + 1  # just after the "_" or "-" the regex found
    for prefix, shortest in prefixes:
        start = anchor - len(prefix)
        if start >= 0 and text.startswith(prefix, start):
            if match.end() - anchor < shortest or _glued(text, start):
                return None
            return start, match.end()
    return None


def _shape_spans(text: str, spans: list[tuple[int, int]]) -> None:
    # One character of each anchor first: "in" finds a single character with memchr, ~25 times
    # faster than any longer search, and most texts lack most of them.
    if "_" in text:
        for m in _UNDERSCORE.finditer(text):
            span = _prefixed(text, m, _UNDERSCORE_PREFIXES)
            if span is not None:
                spans.append(span)
    if "-" in text:
        for m in _DASH.finditer(text):
            span = _prefixed(text, m, _DASH_PREFIXES)
            if span is not None:
                spans.append(span)
        if "PRIVATE KEY" in text:
            spans.extend(m.span() for m in _PEM.finditer(text))
        if "PuTTY-User-Key-File-" in text:
            spans.extend(m.span() for m in _PUTTY.finditer(text))
    if "A" in text:
        for m in _AWS_ID_OR_GOOGLE.finditer(text):
            after = text[m.end()] if m.end() < len(text) else ""
            if not _glued(text, m.start()) and not (after and after in _TOKEN_CHARS_DASH):
                spans.append(m.span())
                if text.startswith("AIza", m.start()):
                    continue
                # An access key id travels with its secret key: a random-looking 40-character
                # string near it is taken for that key, named or not.
                lo, hi = max(0, m.start() - _AWS_PAIR_WINDOW), m.end() + _AWS_PAIR_WINDOW
                for key in _AWS_SECRET_KEY.finditer(text, lo, hi):
                    if _random_looking(key.group()):
                        spans.append(key.span())
    if "J" in text:
        for m in _JWT.finditer(text):
            if not _glued(text, m.start(), _TOKEN_CHARS_DASH):
                spans.append(m.span())
    if "G" in text:
        for m in _SENDGRID.finditer(text):
            if not _glued(text, m.start()):
                spans.append(m.span())
    if ":" in text:
        for m in _URL.finditer(text):
            group = m.lastgroup
            if group is not None:
                spans.append(m.span(group))


# -- by name ------------------------------------------------------------------------------------

_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# detect-secrets' keyword list (its "*_key" entries) and a few more common ones.
_KEY_SUFFIXES = (
    "apikey",
    "authkey",
    "servicekey",
    "accountkey",
    "dbkey",
    "databasekey",
    "privkey",
    "privatekey",
    "clientkey",
    "accesskey",
    "secretkey",
    "signingkey",
    "encryptionkey",
    "masterkey",
    "subscriptionkey",
    "sharedaccesskey",
    "sshkey",
    "storagekey",
    "licensekey",
    "webhookkey",
)


@lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """``True`` for the name of a credential: ``*secret*`` (not ``secretary``), ``*password*``,
    ``*passwd*``, ``*passphrase*``, ``*pwd``, ``*_pass``, ``*token`` (not ``max_tokens``),
    ``*api_key*``, detect-secrets' ``*_key`` names (``private_key``, ``access_key``,
    ``AccountKey``, …), ``*credentials``, ``*signature``, ``sig``, ``authorization``, ``cookie``.
    Any case, with ``_``, ``-``, ``.`` or camelCase between the words."""
    words = [w.lower() for w in _WORDS.findall(name)]
    if not words:
        return False
    s = "".join(words)
    last = words[-1]
    return (
        ("secret" in s and "secretar" not in s)
        or "passw" in s
        or "passphrase" in s
        or "contrase" in s
        or s.endswith("pwd")
        or (last == "pass" and len(words) > 1)
        or s.endswith("token")
        or "apikey" in s
        or s.endswith(_KEY_SUFFIXES)
        or s.endswith(("credential", "credentials", "creds"))
        or s.endswith("signature")
        or s in ("sig", "authorization", "cookie", "setcookie")
    )


# Lowercase fragments every name that ``is_secret_name`` accepts in text contains ("pass" also
# finds "password", "passwd", "passphrase"; "key" the *_key names; "sig" "signature").
_NAME_ANCHORS = ("secret", "pass", "pwd", "token", "key", "cred", "sig")
# A name: at most 128 characters each way from the anchor (a longer run is data, not a name).
_NAME_RUN = re.compile(r"[A-Za-z0-9_.-]{0,128}")
# After the name: a closing quote or bracket (JSON keys, dict literals,
# env["X"]), the assignment, then a quoted (up to its quote or a backslash: JSON-escaped text)
# or bare value.
_ASSIGNED = re.compile(
    r"(?:\\?[\"'`])?\]?[ \t]*(?P<op>:=|=>|==?|:)[ \t]*"
    r"(?:\\?\"(?P<dq>[^\"\\\r\n]{1,1000})|\\?'(?P<sq>[^'\\\r\n]{1,1000})|`(?P<bq>[^`\\\r\n]{1,1000})"
    # A bare value ends at a space, a quote, or a "&", ";" or "," that starts the next field
    # (?a=1&b=2, AccountKey=…;EndpointSuffix=…, {a: 1, b: 2}); otherwise they are its own.
    r"|(?P<bare>[^\s\"'`,;&<>\\{\[]"
    r"(?:[^\s\"'`,;&<>\\]|[&;](?![\w.-]+=)|,(?![\s\"'\w.-]*[:=])){0,999}))"
)
_XML_VALUE = re.compile(r">(?P<xml>[^<\r\n]{1,1000})<")
# detect-secrets' AWS plugin: a 40-character key shortly after an aws…key/secret/token name.
_AWS_SECRET_NEAR = re.compile(r"[^\r\n]{0,40}?(?<![A-Za-z0-9/+])(?P<key>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])")
# Values that are not secrets: literals, template placeholders, masks.
_NOT_A_VALUE = re.compile(
    r"(?i:true|false|null|none|nil|undefined)|\{\{?[\w.\s]*\}\}?|\$\{?\w+\}?|%\(\w+\)s|<[\w\s.-]*>"
    r"|\*+|x{3,}|\.{3}|…|\[REDACTED[^\]]*\]"
)
_PROSE_GOES_ON = re.compile(r"[ \t]+[A-Za-z]")
# "Bearer …" / "Basic …": the credential must look like one (not "a basic understanding").
_SCHEME_VALUE = re.compile(r"(?:bearer|basic)[ \t]+(?P<cred>[A-Za-z0-9._~+/=-]{8,})", re.IGNORECASE)
_CRED_SYMBOLS = frozenset("0123456789._~+/=-")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _looks_generated(value: str) -> bool:
    """A digit or symbol, or a capital after the first letter: a token, not a word."""
    return any(c in _CRED_SYMBOLS for c in value) or any(c.isupper() for c in value[1:])


def _basic_credentials(value: str) -> bool:
    try:
        return b":" in base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False


class _Names:
    """Finds the name around a position: forwards with a regex, backwards with the same regex
    on the reversed text (made once per text, when first needed)."""

    __slots__ = ("_reversed", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._reversed: str | None = None

    def bounds(self, pos: int) -> tuple[int, int]:
        text = self.text
        if self._reversed is None:
            self._reversed = text[::-1]
        # text[pos - 1] is reversed[len(text) - pos]: the run read backwards from there
        back = len(text) - pos
        start = pos - (_NAME_RUN.match(self._reversed, back).end() - back)
        return start, _NAME_RUN.match(text, pos).end()


def _named_spans(text: str, spans: list[tuple[int, int]]) -> None:
    lowered = text.lower()
    if len(lowered) != len(text):  # a few characters lowercase to two ("İ"): keep positions
        lowered = text.translate(_ASCII_LOWER)
    names = _Names(text)
    find = lowered.find
    for anchor in _NAME_ANCHORS:
        pos = find(anchor)
        done_until = -1  # one name holding an anchor twice is looked at once
        while pos != -1:
            if pos >= done_until:
                done_until = _named_value(names, pos, spans)
            pos = find(anchor, pos + len(anchor))
    for scheme in ("bearer", "basic"):
        pos = lowered.find(scheme)
        while pos != -1:
            m = _SCHEME_VALUE.match(text, pos)
            if m is not None and not _glued(text, pos):
                cred = m.group("cred")
                if _looks_generated(cred) or (scheme == "basic" and _basic_credentials(cred)):
                    spans.append(m.span("cred"))
            pos = lowered.find(scheme, pos + len(scheme))


def _named_value(names: _Names, pos: int, spans: list[tuple[int, int]]) -> int:
    """Record the value assigned to the name around ``pos`` if it names a secret; returns where
    the name ends."""
    text = names.text
    start, end = names.bounds(pos)
    name = text[start:end]
    if not is_secret_name(name):
        return end
    m = _ASSIGNED.match(text, end)
    if m is None and start > 0 and text[start - 1] == "<":
        m = _XML_VALUE.match(text, end)
    if m is None:
        if "aws" in name.lower():
            near = _AWS_SECRET_NEAR.match(text, end)
            if near is not None:
                spans.append(near.span("key"))
        return end
    group = m.lastgroup
    if group is None:
        return end
    value = m.group(group)
    if _NOT_A_VALUE.fullmatch(value.rstrip("}])") if group == "bare" else value):
        return end  # (a bare value may end in the brackets around it: {"secret": true})
    if group == "bare" and m.group("op") == ":" and value.isalpha() and _PROSE_GOES_ON.match(text, m.end()):
        return end  # "Password: at least 12 characters": a sentence, not a YAML value or header
    spans.append(m.span(group))
    return m.end(group)  # anchors inside the value are part of it


# -- all of them ---------------------------------------------------------------------------------


def find_secrets(text: str) -> list[tuple[int, int]]:
    """Sorted, non-overlapping ``(start, end)`` spans of ``text`` that hold credentials."""
    spans: list[tuple[int, int]] = []
    _shape_spans(text, spans)
    _named_spans(text, spans)
    if len(spans) < 2:
        return spans
    spans.sort()
    merged = [spans[0]]
    for start, end in spans[1:]:
        last_start, last_end = merged[-1]
        if start < last_end:
            merged[-1] = (last_start, max(last_end, end))
        else:
            merged.append((start, end))
    return merged


def redact_secrets(text: str, replacement: str) -> str:
    spans = find_secrets(text)
    if not spans:
        return text
    out: list[str] = []
    at = 0
    for start, end in spans:
        out.append(text[at:start])
        out.append(replacement)
        at = end
    out.append(text[at:])
    return "".join(out)


__all__ = ["find_secrets", "is_secret_name", "redact_secrets"]
