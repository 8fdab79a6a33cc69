"""The demo's picture: canary weight over time above, both arms' P95 below.

matplotlib is imported here only, when the chart is drawn (it belongs to the demo, not
to the operator); it comes with the ``model`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llmcanary_dev.demo.timeline import Sample, outcomes

__all__ = ["write_chart"]

COLORS = {"reference": "#1f77b4", "canary": "#d62728", "weight": "#2ca02c"}
RESULT_COLORS = {"Stable": "#2ca02c", "RolledBack": "#d62728", "Failed": "#d62728"}


def write_chart(samples: Sequence[Sample], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [1, 1.2]}
    )
    times = [s.t for s in samples]
    top.step(times, [s.weight for s in samples], where="post", color=COLORS["weight"], lw=2)
    top.set_ylabel("canary weight (%)")
    top.set_ylim(-5, 105)
    top.grid(alpha=0.3)

    checks: dict[str, Sample] = {}
    for s in samples:
        if s.check_time and s.phase in ("Progressing", "RolledBack", "Promoting"):
            checks.setdefault(s.check_time, s)
    points = sorted(checks.values(), key=lambda s: s.t)
    for arm in ("reference", "canary"):
        # One line per rollout: a canary of v2 and one of v3 are different models.
        for i, label in enumerate(dict.fromkeys(p.label for p in points)):
            mine = [p for p in points if p.label == label and getattr(p, f"{arm}_ms") is not None]
            bottom.plot(
                [p.t for p in mine],
                [getattr(p, f"{arm}_ms") for p in mine],
                "o-",
                color=COLORS[arm],
                label=f"{'baseline' if arm == 'reference' else arm} arm" if i == 0 else None,
                ms=4,
            )
    bottom.set_ylabel("end-to-end latency, P95 (ms)")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("seconds since the demo started")
    bottom.grid(alpha=0.3)
    bottom.legend(loc="upper left")

    for index, outcome in enumerate(outcomes(samples)):
        mine = [s for s in samples if s.label == outcome.label]
        start, end = mine[0].t, mine[-1].t
        color = RESULT_COLORS.get(outcome.result, "#7f7f7f")
        for axis in (top, bottom):
            axis.axvspan(start, end, color=color, alpha=0.06)
        verb = {"Stable": "promoted", "RolledBack": "rolled back"}.get(
            outcome.result, outcome.result
        )
        if outcome.max_weight == 0 and outcome.result == "Stable":
            verb = "deployed"  # the first revision: no canary
        top.annotate(
            f"{outcome.label}: {verb}",
            xy=(start, 100 - 12 * (index % 2)),  # staggered: short spans do not collide
            xytext=(4, -14),
            textcoords="offset points",
            color=color,
            fontsize=10,
            fontweight="bold",
        )
        top.axvline(end, color=color, ls="--", lw=1)
        bottom.axvline(end, color=color, ls="--", lw=1)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
