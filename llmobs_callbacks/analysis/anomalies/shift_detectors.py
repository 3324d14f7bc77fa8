"""Detectors of shifts in what requests do: the routing mix, quality scores, new prompt versions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..queries import LOWER_IS_BETTER
from .base import DetectorBase, detector_label, severity_of
from .formatting import fmt_p, fmt_window, group_prefix
from .model import MISSING_GROUP, Anomaly
from .statistics import scipy_stats, welch_greater

if TYPE_CHECKING:  # pragma: no cover
    pass


class ShiftDetectors(DetectorBase):
    """The branch mix, quality scores and new prompt versions."""

    # -- routing --

    def _branches(self) -> list[Anomaly]:
        t = self.t
        decisions = self._in(self.data.decisions, "created_at", self.baseline_start, self.now)
        if decisions.empty:
            return []
        out: list[Anomaly] = []
        for (graph, node, pv), rows in decisions.groupby(["graph", "from_node", "pv"], sort=True):
            same_node = decisions[(decisions["graph"] == graph) & (decisions["from_node"] == node)]
            others = same_node[same_node["pv"] != pv]
            sample = self._sample(rows, others, "created_at", None)
            if sample is None:
                continue
            cur, ref = sample.current, sample.reference
            if len(cur) < t.min_decisions or len(ref) < t.min_decisions:
                continue
            self.evaluated["branch_shift"] += 1
            routes = sorted(set(cur["to_node"]) | set(ref["to_node"]))
            cur_counts = cur["to_node"].value_counts().reindex(routes, fill_value=0)
            ref_counts = ref["to_node"].value_counts().reindex(routes, fill_value=0)
            n, m = int(cur_counts.sum()), int(ref_counts.sum())
            best = None
            for route in routes:
                k, r = int(cur_counts[route]), int(ref_counts[route])
                share, ref_share = k / n, r / m
                p = float(scipy_stats().fisher_exact([[k, n - k], [r, m - r]]).pvalue) * len(routes)
                p = min(p, 1.0)
                shift = share - ref_share
                rule = abs(shift) > t.branch_shift and p < t.rule_alpha
                stat = abs(shift) >= t.branch_min_shift and p < t.alpha
                if (rule or stat) and (best is None or abs(shift) > abs(best[3])):
                    best = (route, share, ref_share, shift, p, rule, stat)
            if best is None:
                continue
            route, share, ref_share, shift, p, rule, stat = best
            mix = scipy_stats().chi2_contingency([list(cur_counts), list(ref_counts)])
            from scipy.spatial.distance import jensenshannon

            jsd = float(jensenshannon(list(cur_counts / n), list(ref_counts / m), base=2) ** 2)
            who = f"prompt version {pv}" if pv != MISSING_GROUP else "requests without a prompt version"
            when = (
                f"since it appeared at {sample.since:%Y-%m-%d %H:%M}"
                if sample.new
                else f"in the last {fmt_window(self.window)}"
            )
            text = (
                f"{graph}: {node}→{route} takes {share:.0%} of {who}'s {n} decisions {when} vs "
                f"{ref_share:.0%} for {sample.reference_label} ({shift * 100:+.0f} points, {fmt_p(p)}; "
                f"mix χ² p={mix.pvalue:.1g}, JSD {jsd:.3f})"
            )
            out.append(
                self._anomaly(
                    type="branch_shift",
                    severity=severity_of(rule, stat),
                    metric="route_share",
                    current=share,
                    baseline=ref_share,
                    change=shift * 100,
                    change_unit="pts",
                    explanation=text,
                    detector=detector_label(rule, stat),
                    samples=n,
                    baseline_samples=m,
                    p_value=p,
                    window_start=sample.since,
                    prompt_version=pv,
                    graph=graph,
                    route=f"{node}→{route}",
                    details={
                        "from_node": node,
                        "to_node": route,
                        "reference": sample.reference_label,
                        "chi2_p_value": float(mix.pvalue),
                        "jensen_shannon": jsd,
                        "current_mix": {k: int(v) for k, v in cur_counts.items()},
                        "baseline_mix": {k: int(v) for k, v in ref_counts.items()},
                    },
                )
            )
        return out

    # -- quality --

    def _quality(self) -> list[Anomaly]:
        t = self.t
        scores = self._in(self.data.scores, "start_time", self.baseline_start, self.now)
        if scores.empty:
            return []
        out: list[Anomaly] = []
        for (pv, name), rows in scores.groupby(["pv", "name"], sort=True):
            others = scores[(scores["name"] == name) & (scores["pv"] != pv)]
            sample = self._sample(rows, others, "start_time", None)
            if sample is None:
                continue
            x, y = sample.current["value"].astype(float), sample.reference["value"].astype(float)
            if len(x) < t.min_scores:
                continue
            self.evaluated["quality_drop"] += 1
            group = {"prompt_version": pv}
            described = (
                f"{name} scores since it appeared at {sample.since:%Y-%m-%d %H:%M}"
                if sample.new
                else f"{name} scores in the last {fmt_window(self.window)}"
            )
            if name == "hallucination":
                out += self._rate_check(
                    int((x >= 0.5).sum()),
                    len(x),
                    int((y >= 0.5).sum()),
                    len(y),
                    t.hallucination_rate,
                    t.error_rate_factor,
                    "quality_drop",
                    "hallucination rate",
                    group,
                    described.replace("scores", "flags"),
                    sample.since,
                    sample.reference_label,
                )
                continue
            if len(y) < t.min_scores:
                continue
            current, ref = float(x.mean()), float(y.mean())
            worse = name in LOWER_IS_BETTER
            drop = (current - ref) if worse else (ref - current)
            p = welch_greater(x, y) if worse else welch_greater(y, x)
            if ref == 0 or drop < t.quality_drop * abs(ref) or p >= t.rule_alpha:
                continue
            stat = p < t.alpha
            text = (
                f"{described}: mean {current:.3g} vs {ref:.3g} for {sample.reference_label} "
                f"({current - ref:+.3g}, {fmt_p(p)})"
            )
            out.append(
                self._anomaly(
                    type="quality_drop",
                    severity=severity_of(True, stat),
                    metric=f"mean_{name}",
                    current=current,
                    baseline=ref,
                    change=current - ref,
                    change_unit="delta",
                    explanation=group_prefix(group) + text,
                    detector=detector_label(True, stat),
                    samples=len(x),
                    baseline_samples=len(y),
                    p_value=p,
                    window_start=sample.since,
                    prompt_version=pv,
                    details={"score": name},
                )
            )
        return out

    # -- new prompt versions --

    def _new_versions(self) -> list[Anomaly]:
        out: list[Anomaly] = []
        window_rows = self.traces[self.traces["start_time"] >= self.window_start]
        for pv, rows in window_rows.groupby("pv", sort=True):
            first = self.data.version_first_seen.get(pv)
            if pv == MISSING_GROUP or first is None or first < self.window_start:
                continue
            models = sorted({m for m in rows["model"] if m})
            out.append(
                self._anomaly(
                    type="new_prompt_version",
                    severity="info",
                    metric="requests",
                    current=float(len(rows)),
                    baseline=None,
                    change=None,
                    change_unit="x",
                    explanation=f"prompt version {pv} first seen at {first:%Y-%m-%d %H:%M} "
                    f"({len(rows)} requests in the last {fmt_window(self.window)}"
                    + (f" on {', '.join(models)})" if models else ")"),
                    detector="rule",
                    samples=len(rows),
                    window_start=self.window_start,
                    prompt_version=pv,
                    details={"first_seen": first},
                )
            )
        return out
