"""The value page's charts: a fit's holdout comparison, drawn like the report charts (inline SVG)."""

from __future__ import annotations

from typing import Any

from service.http.dashboard.charts import PALETTE, Chart, _figure, _svg

ACTUAL = "#1d2330"
PREDICTED = PALETTE[0]


def holdout_charts(validation: dict[str, Any]) -> list[Chart]:
    """Both holdout comparisons of Fader, Hardie & Lee (2005): by calibration purchases, and per week."""
    return [chart for chart in (by_frequency_chart(validation), cumulative_chart(validation)) if chart is not None]


def by_frequency_chart(validation: dict[str, Any]) -> Chart | None:
    """Mean repeat purchases in the holdout per number of calibration repeat purchases: actual and predicted."""
    groups = [g for g in validation.get("by_frequency") or [] if g.get("predicted") is not None]
    if not groups:
        return None
    weeks = f"{validation['length']:g}"
    title = f"Repeat purchases in the {weeks}-week holdout, by repeat purchases before it"
    with _figure(height=3.2) as (fig, ax):
        x = list(range(len(groups)))
        ax.plot(x, [g["actual"] for g in groups], color=ACTUAL, marker="o", linewidth=1.8, label="actual")
        ax.plot(x, [g["predicted"] for g in groups], color=PREDICTED, marker="s", linewidth=1.8, linestyle="--",
                label=f"predicted ({_model_name(validation)})")
        ax.set_xticks(x, [g["frequency"] for g in groups])
        ax.set_xlabel("repeat purchases in the calibration period")
        ax.set_ylabel("mean per customer")
        ax.set_ylim(bottom=0)
        ax.grid(axis="x", visible=False)
        ax.set_title(title, loc="left")
        ax.legend(loc="upper left")
        svg = _svg(fig, "holdout-by-frequency", title)
    counts = ", ".join(f"{g['frequency']}: {g['customers']:,}" for g in groups)
    return Chart("holdout-by-frequency", title, svg, f"Customers per group: {counts}.")


def cumulative_chart(validation: dict[str, Any]) -> Chart | None:
    """Cumulative repeat purchases of the calibration customers per holdout week: actual and predicted."""
    points = [p for p in validation.get("cumulative") or [] if p.get("predicted") is not None]
    if not points:
        return None
    title = "Cumulative repeat purchases after the calibration, per week"
    with _figure(height=3.2) as (fig, ax):
        weeks = [p["end"] for p in points]
        ax.plot(weeks, [p["actual"] for p in points], color=ACTUAL, linewidth=1.8, label="actual")
        ax.plot(weeks, [p["predicted"] for p in points], color=PREDICTED, linewidth=1.8, linestyle="--",
                label=f"predicted ({_model_name(validation)})")
        ax.set_xlabel(f"weeks after {validation.get('as_of', 'the calibration end')}")
        ax.set_ylim(bottom=0)
        ax.set_xlim(left=0)
        ax.set_title(title, loc="left")
        ax.legend(loc="upper left")
        svg = _svg(fig, "holdout-cumulative", title)
    return Chart("holdout-cumulative", title, svg)


def _model_name(validation: dict[str, Any]) -> str:
    return {"bgnbd": "BG/NBD", "mbgnbd": "MBG/NBD"}.get(validation.get("model", ""), "model")
