"""Report charts drawn by matplotlib on the server and embedded in the page as inline SVG.

Why this way:

- offline: the dashboard must work on a closed network, so no chart library from a CDN, no
  front-end build and no JavaScript at all (the pages' Content-Security-Policy forbids scripts);
- deterministic: the same report always gives the same markup (fixed hash salt, no timestamps,
  text drawn as paths so no font on the viewer's machine changes it);
- testable: a chart is a string, so tests assert on it like on any other HTML.

Figures are built with ``matplotlib.figure.Figure`` and written by the SVG backend's canvas
(``FigureCanvasSVG``), never through pyplot, so no global figure state is shared between
request threads. The SVG is then made safe to inline under a strict CSP: ``style`` attributes
and the ``<style>`` element become SVG presentation attributes, and element ids are made unique
per chart so several charts fit on one page.
"""

from __future__ import annotations

import datetime
import io
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import matplotlib
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
ET.register_namespace("", SVG_NS)
ET.register_namespace("xlink", XLINK_NS)

# Okabe-Ito: distinguishable with the common forms of colour blindness; the control is grey.
CONTROL_COLOR = "#555b66"
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#7a5195", "#b8a200")
MAX_SERIES = 8  # more lines than this are unreadable; the busiest arms are drawn, the rest named in a note
MAX_LIFT_ROWS = 20

_RC = {
    "svg.hashsalt": "nextbest-dashboard",  # clip-path ids from a fixed salt: same input, same markup
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "font.size": 9.5,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e6eb",
    "grid.linewidth": 0.8,
    "legend.frameon": False,
    "legend.fontsize": 8.5,
}
# rcParams are process-wide; the lock keeps one request's settings from leaking into another's figure.
_LOCK = threading.Lock()

_STYLE_PROPERTIES = frozenset({
    "fill", "fill-opacity", "fill-rule", "opacity", "stroke", "stroke-width", "stroke-linecap", "stroke-linejoin",
    "stroke-opacity", "stroke-dasharray", "stroke-dashoffset", "stroke-miterlimit", "clip-path", "clip-rule",
    "font-family", "font-size", "font-style", "font-weight", "text-anchor", "dominant-baseline", "visibility",
})
_URL_REF = re.compile(r"url\(#([^)]+)\)")


@dataclass(frozen=True, slots=True)
class Chart:
    """One rendered chart: what it shows in words (for screen readers and tests) and its SVG."""

    name: str
    title: str
    svg: str
    note: str | None = None


def colors_for(arms: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Give every arm the same colour on every chart of a page; the control is grey."""
    colors: dict[str, str] = {}
    others = 0
    for arm in arms:
        if arm.get("is_control"):
            colors[arm["arm"]] = CONTROL_COLOR
        else:
            colors[arm["arm"]] = PALETTE[others % len(PALETTE)]
            others += 1
    return colors


def report_charts(report: dict[str, Any], labels: dict[str, str], metric_label: str) -> list[Chart]:
    """Draw every chart the report has data for, in page order."""
    colors = colors_for(report["arms"])
    charts = [
        cumulative_chart(report, labels, colors, metric_label),
        lift_chart(report, labels, colors, metric_label),
        allocation_chart(report, labels, colors),
        ltv_chart(report, labels, colors),
    ]
    return [c for c in charts if c is not None]


# ---------------------------------------------------------------------------------------------
# The charts


def _is_rate(report: dict[str, Any], metric: str) -> bool:
    block = next((m for m in report["metrics"] if m["metric"] == metric), None)
    return block is not None and block["kind"] == "rate"


def _busiest(report: dict[str, Any], limit: int) -> tuple[list[str], str | None]:
    """The control and the arms with most decisions, in report order, and a note naming what was left out."""
    arms = report["arms"]
    if len(arms) <= limit:
        return [a["arm"] for a in arms], None
    ranked = sorted(arms, key=lambda a: (not a["is_control"], -a["decisions"]))[:limit]
    keep = {a["arm"] for a in ranked}
    return [a["arm"] for a in arms if a["arm"] in keep], f"Showing {limit} of {len(arms)} arms (the control and the arms with most decisions)."


def cumulative_chart(report: dict[str, Any], labels: dict[str, str], colors: dict[str, str],
                     metric_label: str) -> Chart | None:
    """Cumulative decision-metric value per arm by day, with its confidence band."""
    metric = report["decision_metric"]
    points = [p for p in report["daily"] if metric in p["metrics"]]
    if not points:
        return None
    arms, note = _busiest(report, MAX_SERIES)
    days = sorted({_day(p["day"]) for p in points})
    level = round(100 * report["confidence"])
    title = f"Cumulative {metric_label.lower()} per arm ({level}% interval)"
    if len(days) == 1:
        title = f"{metric_label} per arm ({level}% interval); all decisions on one day"
    with _figure(height=3.4) as (fig, ax):
        for position, arm in enumerate(arms):
            series = sorted((_day(p["day"]), p["metrics"][metric]) for p in points if p["arm"] == arm)
            series = [(d, v) for d, v in series if v["value"] is not None]
            if not series:
                continue
            color = colors[arm]
            x = [d for d, _ in series]
            y = [v["value"] for _, v in series]
            low = [v["ci_low"] if v["ci_low"] is not None else v["value"] for _, v in series]
            high = [v["ci_high"] if v["ci_high"] is not None else v["value"] for _, v in series]
            if len(days) == 1:
                # One day of data: a point with its interval per arm (there is no "over time" yet).
                ax.errorbar([position], y, yerr=_error_bar(y[0], low[0], high[0]), fmt="o", color=color,
                            capsize=4, label=labels.get(arm, arm))
            else:
                ax.fill_between(x, low, high, color=color, alpha=0.15, linewidth=0)
                ax.plot(x, y, color=color, linewidth=1.8, marker="o" if len(x) <= 31 else None, markersize=3,
                        label=labels.get(arm, arm))
        if len(days) == 1:
            ax.set_xticks(range(len(arms)), [labels.get(a, a) for a in arms])
            ax.set_xlim(-0.6, len(arms) - 0.4)
            ax.set_xlabel(days[0].isoformat())
            ax.grid(axis="x", visible=False)
        else:
            locator = AutoDateLocator(minticks=3, maxticks=8)
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        _value_axis(ax.yaxis, _is_rate(report, metric))
        ax.set_title(title, loc="left")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        svg = _svg(fig, "cumulative", title)
    return Chart("cumulative", title, svg, note)


def lift_chart(report: dict[str, Any], labels: dict[str, str], colors: dict[str, str],
               metric_label: str) -> Chart | None:
    """Relative lift of each arm over the control on the decision metric, with its interval."""
    metric = report["decision_metric"]
    block = next((m for m in report["metrics"] if m["metric"] == metric), None)
    if block is None:
        return None
    rows = [r for r in block["arms"] if not r["is_control"] and r["lift"] is not None]
    if not rows:
        return None
    note = None
    if len(rows) > MAX_LIFT_ROWS:
        rows = sorted(rows, key=lambda r: -r["n"])[:MAX_LIFT_ROWS]
        note = f"Showing the {MAX_LIFT_ROWS} arms with most decisions."
    level = round(100 * report["confidence"])
    title = f"Lift in {metric_label.lower()} over control ({level}% interval)"
    with _figure(height=max(1.6, 0.9 + 0.42 * len(rows))) as (fig, ax):
        for y, row in enumerate(reversed(rows)):
            lift = row["lift"]
            low = row["lift_ci_low"] if row["lift_ci_low"] is not None else lift
            high = row["lift_ci_high"] if row["lift_ci_high"] is not None else lift
            color = colors[row["arm"]]
            ax.errorbar([lift], [y], xerr=_error_bar(lift, low, high), fmt="o", color=color, capsize=4,
                        markersize=6, linewidth=2)
            ax.annotate(f"{100 * lift:+.1f}%", (lift, y), xytext=(0, 7), textcoords="offset points",
                        ha="center", fontsize=8, color="#1d2330")
        ax.axvline(0, color="#1d2330", linewidth=1)
        ax.set_yticks(range(len(rows)), [labels.get(r["arm"], r["arm"]) for r in reversed(rows)])
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.xaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
        ax.grid(axis="y", visible=False)
        ax.set_title(title, loc="left")
        svg = _svg(fig, "lift", title)
    return Chart("lift", title, svg, note)


def allocation_chart(report: dict[str, Any], labels: dict[str, str], colors: dict[str, str]) -> Chart | None:
    """For a bandit: the share of each day's decisions that went to each arm."""
    if report["allocation_type"] != "bandit" or not report["daily"]:
        return None
    per_day = daily_decisions(report["daily"])
    days = sorted(per_day)
    arms, note = _busiest(report, MAX_SERIES)
    totals = {day: sum(per_day[day].values()) for day in days}
    shares = {arm: [per_day[day].get(arm, 0) / totals[day] if totals[day] else 0.0 for day in days] for arm in arms}
    others = [1.0 - sum(shares[a][i] for a in arms) for i in range(len(days))]
    title = "Allocation: share of each day's decisions per arm"
    with _figure(height=3.2) as (fig, ax):
        series = [shares[a] for a in arms]
        names = [labels.get(a, a) for a in arms]
        fill = [colors[a] for a in arms]
        if any(v > 1e-9 for v in others):
            series.append(others)
            names.append("other arms")
            fill.append("#c9cdd4")
        if len(days) == 1:
            bottom = 0.0
            for values, name, color in zip(series, names, fill, strict=True):
                ax.bar([0], values, bottom=bottom, color=color, label=name, width=0.5)
                bottom += values[0]
            ax.set_xticks([0], [days[0].isoformat()])
            ax.set_xlim(-1, 1)
        else:
            ax.stackplot(days, series, labels=names, colors=fill, alpha=0.9)
            ax.set_xlim(days[0], days[-1])
            locator = AutoDateLocator(minticks=3, maxticks=8)
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        ax.set_ylim(0, 1)
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
        ax.set_title(title, loc="left")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        svg = _svg(fig, "allocation", title)
    return Chart("allocation", title, svg, note)


def ltv_chart(report: dict[str, Any], labels: dict[str, str], colors: dict[str, str]) -> Chart | None:
    """LTV-adjusted value per decision split into its components (e.g. revenue, unsubscribe loss), per arm."""
    arms = [a for a in report["arms"] if a.get("ltv_components")]
    if not arms:
        return None
    components = list(dict.fromkeys(name for a in arms for name in a["ltv_components"]))
    title = "LTV-adjusted value per decision, by component"
    with _figure(height=max(2.0, 1.0 + 0.45 * len(arms))) as (fig, ax):
        positive = [0.0] * len(arms)
        negative = [0.0] * len(arms)
        for index, name in enumerate(components):
            values = [float(a["ltv_components"].get(name) or 0.0) for a in arms]
            left = [positive[i] if v >= 0 else negative[i] + v for i, v in enumerate(values)]
            ax.barh(range(len(arms)), [abs(v) for v in values], left=left, height=0.55,
                    color=PALETTE[index % len(PALETTE)], label=name.replace("_", " "))
            for i, v in enumerate(values):
                if v >= 0:
                    positive[i] += v
                else:
                    negative[i] += v
        for i in range(len(arms)):
            total = positive[i] + negative[i]
            ax.plot([total], [i], marker="D", color="#1d2330", markersize=5, linestyle="none",
                    label="net value" if i == 0 else None)
        ax.axvline(0, color="#1d2330", linewidth=1)
        ax.set_yticks(range(len(arms)), [labels.get(a["arm"], a["arm"]) for a in arms])
        ax.invert_yaxis()
        ax.grid(axis="y", visible=False)
        ax.set_title(title, loc="left")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        svg = _svg(fig, "ltv", title)
    return Chart("ltv", title, svg)


def daily_decisions(daily: Sequence[dict[str, Any]]) -> dict[datetime.date, dict[str, int]]:
    """Per-day decisions per arm from the report's cumulative daily series."""
    by_arm: dict[str, list[tuple[datetime.date, int]]] = {}
    for point in daily:
        by_arm.setdefault(point["arm"], []).append((_day(point["day"]), int(point["decisions"])))
    out: dict[datetime.date, dict[str, int]] = {}
    for arm, series in by_arm.items():
        previous = 0
        for day, cumulative in sorted(series):
            out.setdefault(day, {})[arm] = cumulative - previous
            previous = cumulative
    return out


# ---------------------------------------------------------------------------------------------
# Figure plumbing


def _error_bar(value: float, low: float, high: float) -> list[list[float]]:
    """matplotlib's [[below], [above]] lengths, never negative: at a rate of 0 or 1 the interval's bound
    can lie a rounding error (5.6e-17) on the wrong side of the value, and a negative length is refused."""
    return [[max(0.0, value - low)], [max(0.0, high - value)]]


@contextmanager
def _figure(height: float, width: float = 6.4) -> Iterator[tuple[Figure, Any]]:
    """A fresh figure under the dashboard's rc settings, held under the lock until it has been written."""
    with _LOCK, matplotlib.rc_context(_RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        yield fig, fig.add_subplot()


def _value_axis(axis: Any, is_rate: bool) -> None:
    if is_rate:
        axis.set_major_formatter(PercentFormatter(xmax=1, decimals=None))
    else:
        axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.2f}"))


def _day(value: str | datetime.date) -> datetime.date:
    return value if isinstance(value, datetime.date) else datetime.date.fromisoformat(value[:10])


def _svg(fig: Figure, name: str, title: str) -> str:
    buffer = io.StringIO()
    FigureCanvasSVG(fig).print_svg(buffer, metadata={"Date": None, "Creator": None})
    return inline_svg(buffer.getvalue(), name, title)


def inline_svg(document: str, prefix: str, title: str) -> str:
    """Make matplotlib's SVG document fit to inline under a CSP without 'unsafe-inline' styles.

    Style declarations become presentation attributes (which CSP does not govern), metadata goes,
    ids are prefixed so that several charts can share a page, and the size comes from CSS.
    """
    root = ET.fromstring(document.encode())
    svg = f"{{{SVG_NS}}}"
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag in (f"{svg}metadata", f"{svg}style"):
                parent.remove(child)
    # The one <style> rule matplotlib writes applies to every element: put it on the root, where it is inherited.
    root.set("stroke-linejoin", "round")
    root.set("stroke-linecap", "butt")
    referenced: set[str] = set()
    for element in root.iter():
        for key, value in element.attrib.items():
            if key == f"{{{XLINK_NS}}}href" or key == "href":
                referenced.add(value.lstrip("#"))
            referenced.update(_URL_REF.findall(value))
    for element in root.iter():
        style = element.attrib.pop("style", None)
        if style:
            for declaration in style.split(";"):
                prop, _, value = declaration.partition(":")
                prop, value = prop.strip(), value.strip()
                if prop in _STYLE_PROPERTIES and value:
                    element.set(prop, value)
        ident = element.attrib.pop("id", None)
        if ident is not None and ident in referenced:
            element.set("id", f"{prefix}-{ident}")
        for key, value in list(element.attrib.items()):
            if key in (f"{{{XLINK_NS}}}href", "href") and value.startswith("#"):
                element.set(key, f"#{prefix}-{value[1:]}")
            elif "url(#" in value:
                element.set(key, _URL_REF.sub(lambda m: f"url(#{prefix}-{m.group(1)})", value))
    for attribute in ("width", "height", "version"):
        root.attrib.pop(attribute, None)
    root.set("class", "chart")
    root.set("role", "img")
    root.set("aria-label", title)
    root.set("preserveAspectRatio", "xMinYMin meet")
    label = ET.Element(f"{svg}title")
    label.text = title
    root.insert(0, label)
    for element in root.iter():  # drop matplotlib's pretty-printing whitespace
        if element.text is not None and not element.text.strip():
            element.text = None
        if element.tail is not None and not element.tail.strip():
            element.tail = None
    return ET.tostring(root, encoding="unicode")
