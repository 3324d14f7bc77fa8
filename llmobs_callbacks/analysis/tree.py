"""One trace as a tree: an indented text view and an HTML waterfall for Jupyter."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


@dataclass
class SpanNode:
    span: dict[str, Any]
    children: list[SpanNode] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    depth: int = 0

    @property
    def name(self) -> str:
        return str(self.span["name"])

    @property
    def kind(self) -> str:
        return str(self.span["kind"])

    def describe(self) -> str:
        s = self.span
        parts = [f"{self.kind} {self.name}"]
        latency = _num(s.get("latency_ms"))
        if latency is not None:
            parts.append(f"{latency:.1f} ms")
        tin, tout = _num(s.get("input_tokens")), _num(s.get("output_tokens"))
        if tin is not None or tout is not None:
            parts.append(f"tokens {int(tin or 0)}→{int(tout or 0)}")
        cost = _num(s.get("cost_usd"))
        if cost is not None:
            parts.append(f"${cost:.6f}")
        model = _text(s.get("model"))
        if model:
            parts.append(model)
        if s.get("status") == "error":
            error = ": ".join(x for x in (_text(s.get("error_type")), _text(s.get("error_message"))) if x)
            parts.append(f"ERROR {error}".rstrip())
        if self.documents:
            parts.append(f"{len(self.documents)} docs")
        return "  ".join(parts)


def _doc_html(doc: dict[str, Any]) -> str:
    score = _num(doc.get("score"))
    parts = [
        f"#{doc['rank']}",
        html.escape(_text(doc.get("document_id")) or ""),
        "" if score is None else f"({score:.3f})",
        html.escape((_text(doc.get("content")) or "")[:80]),
    ]
    return f"<div class='llmobs-doc' style='font-size:11px;color:#555'>{' '.join(parts)}</div>"


class TraceTree:
    """The spans of one trace, nested by ``parent_span_id`` and ordered by start time."""

    def __init__(self, spans: Any, documents: Any = None, scores: Any = None) -> None:
        records = spans.sort_values("start_time").to_dict("records")
        self.trace_id: str = str(records[0]["trace_id"])
        nodes = {r["span_id"]: SpanNode(r) for r in records}
        for doc in [] if documents is None else documents.to_dict("records"):
            if doc["span_id"] in nodes:
                nodes[doc["span_id"]].documents.append(doc)
        self.trace_scores: list[dict[str, Any]] = []
        self.roots: list[SpanNode] = []
        for node in nodes.values():
            parent = nodes.get(_text(node.span.get("parent_span_id")) or "")
            (parent.children if parent is not None else self.roots).append(node)
        for score in [] if scores is None else scores.to_dict("records"):
            target = nodes.get(_text(score.get("span_id")) or "")
            (target.scores if target is not None else self.trace_scores).append(score)
        self.nodes: list[SpanNode] = []

        def walk(node: SpanNode, depth: int) -> None:
            node.depth = depth
            self.nodes.append(node)
            for child in node.children:
                walk(child, depth + 1)

        for root in self.roots:
            walk(root, 0)
        self.start = min(r["start_time"] for r in records)
        ends = [
            r["end_time"] for r in records if r.get("end_time") is not None and r["end_time"] == r["end_time"]
        ]
        self.end = max(ends) if ends else self.start

    @property
    def root(self) -> SpanNode:
        return self.roots[0]

    def __len__(self) -> int:
        return len(self.nodes)

    def _score_text(self, scores: list[dict[str, Any]]) -> str:
        return ", ".join(
            f"{s['name']}={_num(s.get('value')):g}" if _num(s.get("value")) is not None else f"{s['name']}"
            for s in scores
        )

    def __str__(self) -> str:
        lines = [f"trace {self.trace_id}"]
        if self.trace_scores:
            lines.append(f"scores: {self._score_text(self.trace_scores)}")
        for node in self.nodes:
            line = "  " * node.depth + node.describe()
            if node.scores:
                line += f"  [{self._score_text(node.scores)}]"
            lines.append(line)
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        total = max((self.end - self.start).total_seconds(), 1e-9)
        rows = []
        for node in self.nodes:
            s = node.span
            left = (s["start_time"] - self.start).total_seconds() / total * 100
            end = s.get("end_time")
            width = (
                max((end - s["start_time"]).total_seconds() / total * 100, 0.3)
                if end is not None and end == end
                else 0.3
            )
            error = s.get("status") == "error"
            color = (
                "#d9534f"
                if error
                else {"llm": "#5b8def", "retriever": "#3fb68b", "tool": "#f0ad4e"}.get(node.kind, "#9aa5b1")
            )
            details = []
            tin, tout = _num(s.get("input_tokens")), _num(s.get("output_tokens"))
            if tin is not None or tout is not None:
                details.append(f"{int(tin or 0)}→{int(tout or 0)} tok")
            cost = _num(s.get("cost_usd"))
            if cost is not None:
                details.append(f"${cost:.6f}")
            if error:
                msg = ": ".join(x for x in (_text(s.get("error_type")), _text(s.get("error_message"))) if x)
                details.append(f"<span style='color:#d9534f'>error {html.escape(msg)}</span>")
            if node.scores:
                details.append(html.escape(self._score_text(node.scores)))
            docs = "".join(_doc_html(d) for d in node.documents)
            latency = _num(s.get("latency_ms"))
            rows.append(
                "<tr class='llmobs-span' data-depth='{depth}'>"
                "<td style='padding-left:{pad}px;white-space:nowrap'><b>{name}</b> "
                "<span style='color:#888'>{kind}</span>{docs}</td>"
                "<td style='width:45%'><div style='position:relative;height:14px;background:#f4f4f4'>"
                "<div style='position:absolute;left:{left:.2f}%;width:{width:.2f}%;height:14px;"
                "background:{color}'></div></div></td>"
                "<td style='white-space:nowrap'>{latency}</td><td>{details}</td></tr>".format(
                    depth=node.depth,
                    pad=6 + 16 * node.depth,
                    name=html.escape(node.name),
                    kind=html.escape(node.kind),
                    docs=docs,
                    left=left,
                    width=min(width, 100 - left),
                    color=color,
                    latency="" if latency is None else f"{latency:.1f} ms",
                    details=" · ".join(details),
                )
            )
        header = f"<div><b>trace</b> <code>{html.escape(self.trace_id)}</code>"
        if self.trace_scores:
            header += f" · scores: {html.escape(self._score_text(self.trace_scores))}"
        header += f" · {total * 1000:.1f} ms</div>"
        return (
            f"{header}<table class='llmobs-trace' style='border-collapse:collapse;font-size:12px'>"
            "<tr><th style='text-align:left'>span</th><th>timeline</th><th>latency</th><th>details</th></tr>"
            + "".join(rows)
            + "</table>"
        )
