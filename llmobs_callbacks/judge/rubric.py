"""The judge's rubric (prompt) and a tolerant parser of its JSON verdict.

The parser accepts the usual deviations of real models — code fences, text around the JSON,
numbers as strings (``"4"``, ``"4/5"``), ``{"score": 4}`` objects, a ``{"scores": {...}}``
wrapper, keys in any case, yes/no as booleans — and rejects everything else with
``JudgeOutputError``: a missing metric, a value outside its scale or an unreadable answer
never becomes a made-up score.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal


class JudgeOutputError(ValueError):
    """The judge's answer could not be read as the rubric's JSON."""


@dataclass(frozen=True)
class Metric:
    """One thing the judge scores. ``scale``: a number in [low, high]; ``boolean``: yes/no,
    stored as 1.0 (yes) / 0.0 (no) with label ``yes`` / ``no``."""

    name: str
    description: str
    kind: Literal["scale", "boolean"] = "scale"
    low: float = 1.0
    high: float = 5.0

    def spec(self) -> str:
        if self.kind == "boolean":
            return f'- "{self.name}": "yes" or "no". {self.description}'
        return f'- "{self.name}": a number from {self.low:g} to {self.high:g}. {self.description}'


BUILTIN_METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "faithfulness",
            "Is every claim in the answer supported by the context? 5 = fully supported, 1 = not at all.",
        ),
        Metric(
            "relevance",
            "Does the answer address the question? 5 = directly and fully, 1 = off-topic.",
        ),
        Metric(
            "completeness",
            "Does the answer cover everything the question asks that the context can answer? "
            "5 = complete, 1 = misses most of it.",
        ),
        Metric(
            "hallucination",
            '"yes" if the answer states facts that are neither in the context nor common knowledge.',
            kind="boolean",
            low=0.0,
            high=1.0,
        ),
    )
}
DEFAULT_METRICS = ("faithfulness", "relevance", "completeness", "hallucination")

DEFAULT_TEMPLATE = """You are a strict evaluator of a question-answering assistant.
Judge the ANSWER to the QUESTION using only the CONTEXT the assistant retrieved.

QUESTION:
{question}

CONTEXT:
{context}

ANSWER:
{answer}

Score these metrics:
{metrics}

Reply with only a JSON object with exactly these keys and a short "reason" (one sentence), e.g.
{example}"""


def resolve_metric(metric: str | Metric) -> Metric:
    if isinstance(metric, Metric):
        return metric
    builtin = BUILTIN_METRICS.get(metric)
    if builtin is not None:
        return builtin
    return Metric(metric, f"Rate the answer's {metric.replace('_', ' ')}: 5 = best, 1 = worst.")


@dataclass(frozen=True)
class Rubric:
    """What the judge is asked. ``template`` may use ``{question}``, ``{answer}``,
    ``{context}``, ``{metrics}`` (one line per metric) and ``{example}`` (a JSON example)."""

    metrics: Sequence[Metric] = field(default_factory=lambda: [BUILTIN_METRICS[m] for m in DEFAULT_METRICS])
    template: str = DEFAULT_TEMPLATE
    name: str = "default"

    @classmethod
    def of(
        cls, metrics: Sequence[str | Metric], template: str | None = None, name: str | None = None
    ) -> Rubric:
        resolved = [resolve_metric(m) for m in metrics]
        if not resolved:
            raise ValueError("a rubric needs at least one metric")
        if len({m.name for m in resolved}) != len(resolved):
            raise ValueError("metric names must be unique")
        return cls(resolved, template or DEFAULT_TEMPLATE, name or "default")

    @property
    def id(self) -> str:
        """A fingerprint of the template and metrics: a changed rubric gives new score ids."""
        spec = json.dumps(
            [self.template, [(m.name, m.kind, m.low, m.high, m.description) for m in self.metrics]]
        )
        return hashlib.sha256(spec.encode()).hexdigest()[:12]

    def render(self, question: str, answer: str, context: Sequence[str]) -> str:
        example: dict[str, Any] = {
            m.name: ("no" if m.kind == "boolean" else int(m.high) if m.high == int(m.high) else m.high)
            for m in self.metrics
        }
        example["reason"] = "..."
        ctx = "\n\n".join(f"[{i + 1}] {doc}" for i, doc in enumerate(context)) or "(no documents retrieved)"
        return self.template.format(
            question=question,
            answer=answer,
            context=ctx,
            metrics="\n".join(m.spec() for m in self.metrics),
            example=json.dumps(example),
        )

    def parse(self, text: str) -> Judgement:
        return parse_judgement(text, self.metrics)


@dataclass(frozen=True)
class MetricScore:
    name: str
    value: float
    label: str | None


@dataclass(frozen=True)
class Judgement:
    scores: list[MetricScore]
    reason: str | None


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_NUMBER = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*(?:/\s*\d+(?:\.\d+)?)?\s*$")
_YES = {"yes", "true", "y", "1"}
_NO = {"no", "false", "n", "0"}


def _json_objects(text: str) -> list[Any]:
    """Candidate JSON objects in ``text``: fenced blocks first, then each balanced ``{...}``."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)]
    candidates.append(text)
    found: list[Any] = []
    decoder = json.JSONDecoder()
    for chunk in candidates:
        stripped = chunk.strip()
        try:
            found.append(json.loads(stripped))
            continue
        except ValueError:
            pass
        for start in (i for i, ch in enumerate(stripped) if ch == "{"):
            try:
                obj, _ = decoder.raw_decode(stripped, start)
            except ValueError:
                continue
            found.append(obj)
            break
    return [obj for obj in found if isinstance(obj, dict)]


def _lookup(obj: Mapping[str, Any], name: str) -> Any:
    lowered = {str(k).strip().lower(): v for k, v in obj.items()}
    for key in (name.lower(), name.lower().replace("_", " ")):
        if key in lowered:
            return lowered[key]
    scores = lowered.get("scores")
    if isinstance(scores, Mapping):
        return _lookup(scores, name)
    return None


def _value(metric: Metric, raw: Any) -> MetricScore:
    if isinstance(raw, Mapping):  # {"score": 4, "reason": "..."}
        for key in ("score", "value", "verdict", "rating"):
            if key in raw:
                raw = raw[key]
                break
    if metric.kind == "boolean":
        if isinstance(raw, bool):
            yes = raw
        elif isinstance(raw, (int, float)) and raw in (0, 1):
            yes = raw == 1
        elif isinstance(raw, str) and raw.strip().lower() in _YES | _NO:
            yes = raw.strip().lower() in _YES
        else:
            raise JudgeOutputError(f"{metric.name}: expected yes/no, got {raw!r}")
        return MetricScore(metric.name, 1.0 if yes else 0.0, "yes" if yes else "no")
    if isinstance(raw, bool) or raw is None:
        raise JudgeOutputError(f"{metric.name}: expected a number, got {raw!r}")
    if isinstance(raw, str):
        match = _NUMBER.match(raw)
        if not match:
            raise JudgeOutputError(f"{metric.name}: expected a number, got {raw!r}")
        raw = float(match.group(1))
    if not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise JudgeOutputError(f"{metric.name}: expected a number, got {raw!r}")
    if not metric.low <= raw <= metric.high:
        raise JudgeOutputError(f"{metric.name}: {raw} outside [{metric.low:g}, {metric.high:g}]")
    return MetricScore(metric.name, float(raw), None)


def parse_judgement(text: str, metrics: Sequence[Metric]) -> Judgement:
    """Read the judge's answer; ``JudgeOutputError`` unless every metric has a valid value."""
    if not isinstance(text, str) or not text.strip():
        raise JudgeOutputError("empty answer")
    last_error: JudgeOutputError | None = None
    for obj in _json_objects(text):
        try:
            scores = []
            for metric in metrics:
                raw = _lookup(obj, metric.name)
                if raw is None:
                    raise JudgeOutputError(f"missing metric {metric.name!r}")
                scores.append(_value(metric, raw))
        except JudgeOutputError as exc:
            last_error = exc
            continue
        reason = _lookup(obj, "reason")
        if reason is None:
            reason = _lookup(obj, "explanation")
        return Judgement(scores, None if reason is None else str(reason)[:2000])
    raise last_error or JudgeOutputError("no JSON object in the answer")
