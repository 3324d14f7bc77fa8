"""Heuristic quality scores that need no LLM (``source='rule'``).

- ``empty_answer``: 1.0 when the answer is empty or whitespace (label ``empty``), else 0.0.
- ``grounded``: the largest share of the answer's content words found in one retrieved
  document (0..1); label ``grounded`` at or above ``threshold`` (0.5), else ``ungrounded``.
  Only computed when the trace retrieved documents and the answer has content words.
- ``refusal``: 1.0 when the answer contains a refusal phrase (label ``refusal``), else 0.0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "i",
        "you",
        "he",
        "she",
        "we",
        "they",
        "them",
        "his",
        "her",
        "our",
        "your",
        "their",
        "not",
        "no",
        "do",
        "does",
        "did",
        "can",
        "could",
        "will",
        "would",
        "should",
        "may",
        "might",
        "must",
        "have",
        "has",
        "had",
        "so",
        "than",
        "then",
        "too",
        "very",
        "also",
        "into",
        "about",
        "what",
        "which",
        "who",
        "whom",
        "when",
        "where",
        "why",
        "how",
    ]
)
REFUSAL_PHRASES = (
    "i can't help",
    "i cannot help",
    "i can't assist",
    "i cannot assist",
    "i'm unable to",
    "i am unable to",
    "i'm sorry, but",
    "i am sorry, but",
    "i don't know",
    "i do not know",
    "i cannot answer",
    "i can't answer",
    "as an ai",
    "i'm not able to",
    "i am not able to",
)


@dataclass(frozen=True)
class RuleScore:
    name: str
    value: float
    label: str
    comment: str | None = None


def content_words(text: str) -> set[str]:
    return {
        w for w in (m.group(0).lower() for m in _WORD.finditer(text)) if w not in _STOPWORDS and len(w) > 1
    }


def grounding(answer: str, documents: Sequence[str]) -> float | None:
    """Largest share of the answer's content words found in one document; None if undefined."""
    words = content_words(answer)
    if not words or not documents:
        return None
    return max(len(words & content_words(doc)) / len(words) for doc in documents)


def is_refusal(answer: str) -> bool:
    lowered = answer.lower().replace("’", "'")
    return any(phrase in lowered for phrase in REFUSAL_PHRASES)


def rule_scores(
    answer: str | None, documents: Sequence[str] = (), *, threshold: float = 0.5
) -> list[RuleScore]:
    """The rule scores of one answer (see the module docstring)."""
    text = answer or ""
    empty = not text.strip()
    scores = [RuleScore("empty_answer", 1.0 if empty else 0.0, "empty" if empty else "non_empty")]
    if empty:
        return scores
    overlap = grounding(text, documents)
    if overlap is not None:
        label = "grounded" if overlap >= threshold else "ungrounded"
        scores.append(RuleScore("grounded", round(overlap, 6), label, f"best token overlap {overlap:.2f}"))
    refused = is_refusal(text)
    scores.append(RuleScore("refusal", 1.0 if refused else 0.0, "refusal" if refused else "answer"))
    return scores
