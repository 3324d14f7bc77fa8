"""Detectors of request metrics: tokens, cost per request, latency, error rates, tool failures,
empty retrievals, and the window's total cost against the baseline's windows."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from .base import DetectorBase, Sample, detector_label, severity_of
from .formatting import fmt_num, fmt_p, fmt_window, group_prefix
from .model import MISSING_GROUP, Anomaly
from .statistics import binom_greater, fisher_greater, robust_z, welch_greater

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


class RequestDetectors(DetectorBase):
    """Per-request metrics and rates of tool calls and retrievals."""

    # -- request metrics: tokens, cost per request, latency, errors --

    def _request_metrics(self) -> list[Anomaly]:
        traces = self.traces
        out: list[Anomaly] = []
        window_rows = traces[traces["start_time"] >= self.window_start]
        # Tokens and cost per prompt version and model (requests without an LLM call have none).
        for (pv, model), rows in traces[traces["model"] != MISSING_GROUP].groupby(["pv", "model"], sort=True):
            if not ((window_rows["pv"] == pv) & (window_rows["model"] == model)).any():
                continue
            others = traces[(traces["pv"] != pv) & (traces["model"] != MISSING_GROUP)]
            sample = self._sample(rows, others, "start_time", others["model"] == model)
            if sample is None or len(sample.current) < self.t.min_requests:
                continue
            group = {"prompt_version": pv, "model": model}
            out += self._mean_check(
                sample, group, "tokens", "token_spike", "tokens per request", self.t.token_spike_factor, ""
            )
            out += self._mean_check(
                sample,
                group,
                "cost_usd",
                "cost_spike",
                "cost per request",
                self.t.cost_per_request_factor,
                "$",
            )
        # Latency and errors per prompt version (a request failing before its LLM call has no model).
        for pv, rows in traces.groupby("pv", sort=True):
            if not (window_rows["pv"] == pv).any():
                continue
            sample = self._sample(rows, traces[traces["pv"] != pv], "start_time", None)
            if sample is None or len(sample.current) < self.t.min_requests:
                continue
            group = {"prompt_version": pv}
            out += self._latency(sample, group)
            failed = int((sample.current["status"] == "error").sum())
            ref_failed = int((sample.reference["status"] == "error").sum())
            out += self._rate_check(
                failed,
                len(sample.current),
                ref_failed,
                len(sample.reference),
                self.t.error_rate,
                self.t.error_rate_factor,
                "error_rate",
                "error rate",
                group,
                self._describe(sample, "error rate"),
                sample.since,
                sample.reference_label,
            )
        return out

    def _mean_check(
        self, s: Sample, group: dict[str, Any], column: str, kind: str, what: str, factor: float, unit: str
    ) -> list[Anomaly]:
        t = self.t
        x, y = s.current[column].dropna(), s.reference[column].dropna()
        if len(x) < t.min_requests or len(y) < t.min_requests:
            return []
        self.evaluated[kind] += 1
        current, ref = float(x.mean()), float(y.mean())
        if ref <= 0:
            return []
        ratio = current / ref
        p = welch_greater(x, y)
        rule = ratio >= factor and p < t.rule_alpha
        buckets = self._buckets(
            self._in(s.reference, "start_time", self.baseline_start, self.window_start), column
        )
        means = buckets.mean()[buckets.count() >= max(3, t.min_requests // 2)]
        z, median = (None, None)
        stat = False
        if len(means) >= t.min_baseline_buckets:
            z, median = robust_z(current, list(means))
            stat = z is not None and median is not None and median > 0 and z >= t.z_threshold
            stat = stat and current >= (1 + t.min_increase) * median  # type: ignore[operator]
        if not (rule or stat):
            return []
        metric = "tokens_per_request" if column == "tokens" else "cost_per_request_usd"
        text = (
            f"{self._describe(s, what)}: {fmt_num(current, unit)} vs {fmt_num(ref, unit)} for "
            f"{s.reference_label} ({ratio:.2f}×, {fmt_p(p)}"
            + (f", robust z {z:.1f}" if z is not None else "")
            + ")"
        )
        return [
            self._ratio_anomaly(
                s, group, kind, metric, rule, stat, current, ref, (len(x), len(y)), p, z, text,
                baseline_median=median,
            )
        ]  # fmt: skip

    def _ratio_anomaly(
        self,
        s: Sample,
        group: dict[str, Any],
        kind: str,
        metric: str,
        rule: bool,
        stat: bool,
        current: float,
        ref: float,
        samples: tuple[int, int],
        p: float,
        z: float | None,
        text: str,
        **details: Any,
    ) -> Anomaly:
        """An anomaly whose change is ``current / ref`` of a sample against its reference."""
        return self._anomaly(
            type=kind,
            severity=severity_of(rule, stat),
            metric=metric,
            current=current,
            baseline=ref,
            change=current / ref,
            change_unit="x",
            explanation=group_prefix(group) + text,
            detector=detector_label(rule, stat),
            samples=samples[0],
            baseline_samples=samples[1],
            p_value=p,
            z=z,
            window_start=s.since,
            details={"reference": s.reference_label, "new_version": s.new, **details},
            **group,
        )

    def _latency(self, s: Sample, group: dict[str, Any]) -> list[Anomaly]:
        t = self.t
        x, y = s.current["latency_ms"].dropna(), s.reference["latency_ms"].dropna()
        if len(x) < t.min_requests or len(y) < t.min_requests:
            return []
        self.evaluated["latency_spike"] += 1
        found: list[tuple[str, float, float, float, float, bool, bool, float | None]] = []
        for q, minimum in ((0.95, t.min_requests), (0.99, t.min_requests_p99)):
            if len(x) < minimum or len(y) < minimum:
                continue
            current, ref = float(x.quantile(q)), float(y.quantile(q))
            if ref <= 0:
                continue
            # Exceedance test: under "no change", a share (1 - q) of requests exceed the
            # reference's quantile; many more than that is a shifted tail.
            exceed = int((x > ref).sum())
            p = binom_greater(exceed, len(x), 1 - q)
            rule = current >= t.latency_spike_factor * ref and p < t.rule_alpha
            stat = False
            z = None
            if q == 0.95:
                ref_rows = self._in(s.reference, "start_time", self.baseline_start, self.window_start)
                buckets = self._buckets(ref_rows, "latency_ms")
                counts = buckets.count()
                values = buckets.quantile(q)[counts >= max(3, t.min_requests // 2)]
                if len(values) >= t.min_baseline_buckets:
                    z, median = robust_z(current, list(values))
                    stat = bool(
                        z is not None
                        and median
                        and z >= t.z_threshold
                        and current >= (1 + t.min_increase) * median
                    )
            if rule or stat:
                found.append((f"p{round(q * 100)}", current, ref, current / ref, p, rule, stat, z))
        if not found:
            return []
        name, current, ref, ratio, p, rule, stat, z = max(found, key=lambda f: (f[5] and f[6], f[3]))
        text = (
            f"{self._describe(s, f'{name} latency')}: {fmt_num(current, 'ms')} vs {fmt_num(ref, 'ms')} "
            f"for {s.reference_label} ({ratio:.2f}×, {fmt_p(p)})"
        )
        return [
            self._ratio_anomaly(
                s, group, "latency_spike", f"{name}_latency_ms", rule, stat, current, ref,
                (len(x), len(y)), p, z, text,
            )
        ]  # fmt: skip

    def _rate_check(
        self,
        k: int,
        n: int,
        ref_k: int,
        ref_n: int,
        limit: float,
        factor: float,
        kind: str,
        what: str,
        group: dict[str, Any],
        described: str,
        since: datetime,
        reference_label: str,
    ) -> list[Anomaly]:
        """A rate (errors, failures, empty retrievals) above ``limit`` or ``factor`` × the
        reference's, significantly (Fisher's exact test; a binomial test against ``limit`` when
        there is no reference)."""
        t = self.t
        if n < t.min_requests:
            return []
        self.evaluated[kind] += 1
        if k == 0:
            return []
        rate = k / n
        has_ref = ref_n >= t.min_requests
        ref_rate = ref_k / ref_n if has_ref else None
        above_limit = rate > limit
        above_ref = ref_rate is not None and rate >= factor * ref_rate and rate > ref_rate
        p = fisher_greater(k, n, ref_k, ref_n) if has_ref else binom_greater(k, n, limit)
        if not (above_limit or above_ref) or p >= t.rule_alpha:
            return []
        critical = above_limit and (above_ref or not has_ref) and p < t.alpha
        ref_text = f"{fmt_num(ref_rate, '%')} for {reference_label}" if has_ref else "no baseline"
        text = f"{described}: {fmt_num(rate, '%')} ({k} of {n}) vs {ref_text} ({fmt_p(p)})"
        return [
            self._anomaly(
                type=kind,
                severity="critical" if critical else "warning",
                metric=what.replace(" ", "_"),
                current=rate,
                baseline=ref_rate,
                change=None if ref_rate is None else (rate - ref_rate) * 100,
                change_unit="pts",
                explanation=group_prefix(group) + text,
                detector="rule+statistical" if critical else "rule",
                samples=n,
                baseline_samples=ref_n,
                p_value=p,
                window_start=since,
                details={"events": k, "baseline_events": ref_k},
                **group,
            )
        ]

    def _rates(
        self,
        frame: pd.DataFrame,
        column: str,
        kind: str,
        what: str,
        limit: float,
        factor: float,
    ) -> list[Anomaly]:
        """Per tool (or retriever): failed calls (or empty retrievals), window vs baseline."""
        out: list[Anomaly] = []
        frame = self._in(frame, "start_time", self.baseline_start, self.now)
        if frame.empty:
            return out
        bad = frame[column] == "error" if column == "status" else frame[column] == 0
        frame = frame.assign(bad=bad)
        for name, rows in frame.groupby("name", sort=True):
            current = rows[rows["start_time"] >= self.window_start]
            reference = rows[rows["start_time"] < self.window_start]
            described = f"{what} of {name} in the last {fmt_window(self.window)}"
            out += self._rate_check(
                int(current["bad"].sum()),
                len(current),
                int(reference["bad"].sum()),
                len(reference),
                limit,
                factor,
                kind,
                what,
                {"tool": name},
                described,
                self.window_start,
                "its baseline",
            )
        return out

    # -- the window's total cost against the baseline's windows --

    def _hourly_cost(self) -> list[Anomaly]:
        t = self.t
        traces = self.traces
        current_rows = traces[traces["start_time"] >= self.window_start]
        if len(current_rows) < t.min_requests:
            return []
        base = traces[traces["start_time"] < self.window_start]
        if base.empty:
            return []
        size = self.window.total_seconds()
        offset = (base["start_time"] - self.window_start).dt.total_seconds()
        index = (offset // size).astype("int64")
        sums = base["cost_usd"].fillna(0.0).groupby(index).sum()
        # Empty windows count as zero spend, from the first one with data on.
        full = sums.reindex(range(int(index.min()), 0), fill_value=0.0)
        if len(full) < t.min_baseline_buckets:
            return []
        self.evaluated["cost_spike"] += 1
        current = float(current_rows["cost_usd"].fillna(0.0).sum())
        mean = float(full.mean())
        if mean <= 0:
            return []
        ratio = current / mean
        rule = ratio >= t.cost_spike_factor
        z, median = robust_z(current, list(full))
        stat = bool(
            z is not None and median and z >= t.z_threshold and current >= (1 + t.min_increase) * median
        )
        if not (rule or stat):
            return []
        # Attribute the excess: each group's spend above what its requests cost in the reference.
        contributions = []
        for (pv, model), rows in current_rows.groupby(["pv", "model"], sort=True):
            lookback = traces[(traces["pv"] == pv) & (traces["model"] == model)]
            others = traces[traces["pv"] != pv]
            sample = self._sample(lookback, others, "start_time", others["model"] == model)
            ref_cost = sample.reference["cost_usd"].dropna() if sample is not None else []
            per_request = float(ref_cost.mean()) if len(ref_cost) else 0.0
            excess = float(rows["cost_usd"].fillna(0.0).sum()) - len(rows) * per_request
            contributions.append((excess, pv, model))
        contributions.sort(reverse=True)
        excess, pv, model = contributions[0] if contributions else (0.0, MISSING_GROUP, MISSING_GROUP)
        total_excess = current - mean
        named = excess > 0 and excess >= 0.5 * total_excess
        group = {"prompt_version": pv, "model": model} if named else {}
        win = fmt_window(self.window)
        text = (
            f"LLM spend in the last {win} {fmt_num(current, '$')} vs a baseline mean of "
            f"{fmt_num(mean, '$')} per {win} ({ratio:.2f}×; median {fmt_num(median, '$')}, robust z "
            f"{z:.1f})"
            + (
                f"; most of the increase is {pv or '(no version)'} on {model or '(no model)'} "
                f"(+{fmt_num(excess, '$')})"
                if named
                else ""
            )
        )
        return [
            self._anomaly(
                type="cost_spike",
                severity=severity_of(rule, stat),
                metric="window_cost_usd",
                current=current,
                baseline=mean,
                change=ratio,
                change_unit="x",
                explanation=text,
                detector=detector_label(rule, stat),
                samples=len(current_rows),
                baseline_samples=len(base),
                z=z,
                window_start=self.window_start,
                details={
                    "baseline_median": median,
                    "baseline_windows": len(full),
                    "contributions": [
                        {"prompt_version": v or None, "model": m or None, "excess_usd": e}
                        for e, v, m in contributions
                    ],
                },
                **group,
            )
        ]
