"""The closed loop: validation gates between a candidate model version and production,
promotion policies that require them, and notifications (docs/loop.md).

    from mlops_jupyter.loop import threshold, not_worse, latency, custom
    # and drift, privacy, llm_score: what the store recorded about the candidate
    report = mj.gate("classifier", candidate=5, data=eval_df, target="y",
                     rules=[threshold("accuracy", ">=", 0.9), not_worse("accuracy", by=0.01)])
    mj.set_model_policy("classifier", require_gate=True)
    mj.notify({"kind": "alert", "text": "input drift on classifier"})
"""

from __future__ import annotations

from .gate import GateReport, default_predict, gate, gates
from .notify import Command, Email, Webhook, channels_from_env, notify
from .policy import model_policy, set_model_policy
from .rules import (
    METRICS,
    GateContext,
    Metric,
    Rule,
    RuleResult,
    custom,
    latency,
    metric,
    not_worse,
    paired_bootstrap,
    threshold,
)
from .rules_more import drift, llm_score, privacy

__all__ = [
    "METRICS",
    "Command",
    "Email",
    "GateContext",
    "GateReport",
    "Metric",
    "Rule",
    "RuleResult",
    "Webhook",
    "channels_from_env",
    "custom",
    "default_predict",
    "drift",
    "gate",
    "gates",
    "latency",
    "llm_score",
    "metric",
    "model_policy",
    "not_worse",
    "notify",
    "paired_bootstrap",
    "privacy",
    "set_model_policy",
    "threshold",
]
