"""Release gate: does a candidate prompt (or model) version regress against a baseline?

``run_gate(store, baseline="v1", candidate="v2")`` tests each criterion of :class:`GateCriteria`
on the requests of both versions and returns a :class:`GateResult` whose ``exit_code`` is 0
(pass), 1 (a regression) or 2 (too little data, or nothing to check spend with). ``llmobs gate``
prints its table and exits with it, so a CI job fails like a failing test.

A criterion is a test, not a comparison of two numbers. It fails when the candidate is
**significantly worse** than the baseline and its change is **not shown to be within the limit**:

- significance: a one-sided whole-distribution test per criterion (``statistics.py``: a
  permutation test of rank scores; a sign-flip test of signed ranks when paired), its p-value
  adjusted family-wise over every criterion of the run (Westfall–Young step-down minP), so a gate
  run raises a false alarm with probability at most ``alpha`` (0.01) when nothing changed;
- the limit: the upper end of the change's bootstrap interval (95 %) is beyond the limit. A
  candidate that is worse but whose whole interval lies within the limit passes; so does one
  that is not significantly worse, however noisy its point estimate.

The error rate's limit is on the candidate's own rate: it fails when that rate is above the limit
and significantly above the baseline's (the permutation test of a 0/1 column is Fisher's exact
test). Quality limits are per score, on the score's own scale, relative to the baseline's mean by
default; a score's change is candidate − baseline as it is, with its direction (``worse`` /
``better``: lower is better for ``LOWER_IS_BETTER`` names).

A request is a user-facing root trace (internal work such as judge runs left out): its cost is
the sum over its LLM calls (unknown when a call reported tokens but got no price), tokens
input + output, latency the root's, an error when the root failed, quality the mean of each
score name given to it. When either side's cost is unknown the cost row says which models are
unpriced and tokens per request decides (the verdict says so).

Paired mode: when both versions answered the same inputs (an eval set), requests are matched by
an input id in the root run's metadata (``input_id``, ``example_id``, ``dataset_item_id``) or, on
request, by a hash of the root's input text, and compared per input.
"""

from .formatting import change_text, interval_text, p_text, value_text
from .model import (
    FAIL,
    GROUPINGS,
    INPUT_ID_KEYS,
    INSUFFICIENT,
    NOT_APPLICABLE,
    PAIRINGS,
    PASS,
    GateCriteria,
    GateInputError,
    GateResult,
    GateRow,
    QualityLimit,
    parse_fraction,
    parse_quality_limit,
)
from .run import run_gate

__all__ = [
    "FAIL",
    "GROUPINGS",
    "INPUT_ID_KEYS",
    "INSUFFICIENT",
    "NOT_APPLICABLE",
    "PAIRINGS",
    "PASS",
    "GateCriteria",
    "GateInputError",
    "GateResult",
    "GateRow",
    "QualityLimit",
    "change_text",
    "interval_text",
    "p_text",
    "parse_fraction",
    "parse_quality_limit",
    "run_gate",
    "value_text",
]
