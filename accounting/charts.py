"""ENCS charts as inline SVG, drawn on the server with matplotlib.

Pure functions: an `EncsReport` from `accounting.selectors.encs_figures` (or some of its
parts) in,
an `<svg>` string out, for the dashboard and for the printable report alike (the same SVG
goes into WeasyPrint's PDF, so no JavaScript charting). Output is deterministic: a fixed
`svg.hashsalt`, no date in the metadata, and every `id` prefixed with the chart's name, so
tests can compare charts and several can sit in one HTML page without id clashes.

Money arrives as Decimal; it becomes float only here, for drawing.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Literal

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator
from matplotlib.typing import RcKeyType

from accounting.facts import DRAFTED_KINDS
from accounting.figures import (
    KIND_LABELS,
    BreakEvenTarget,
    EncsReport,
    Figures,
    Group,
    TierCost,
)

# Figures are drawn without pyplot (no global state, safe in threaded workers); Agg keeps any
# pyplot import elsewhere in the process from looking for a display.
matplotlib.use("Agg")

# The console's palette (static/csbot/console.css), so charts and page look like one thing.
INK = "#1d2330"
MUTED = "#475467"
GRID = "#e3e6eb"
ACCENT = "#1f5fd6"
GOOD = "#12875a"
BAD = "#c4322a"
ACTION_COLOURS = dict(zip(DRAFTED_KINDS, ("#12875a", "#e3a008", "#c4322a"), strict=True))
OTHER_LABEL = "Not acted on"

# Widths in inches (72 pt each). The page stretches each chart to its card (CSS `width:
# 100%`), so a chart's scale on screen is its card's width over the width it was drawn at: a
# chart must be drawn at the width of the card it sits in, or its text and bars grow with the
# card (the intent chart, drawn half-width in a full-width card, came out twice as large as
# the others). One width per place (`SLOT_WIDTHS`): the dashboard's full-width and half-width
# cards (two half cards and the grid's gap make a full one), and the printed page (A4 less
# margins, ~7.1 in), where every chart spans the page. Heights follow from each chart's
# content; the scale does not.
SCREEN_WIDE = 11.5
SCREEN_HALF = 5.5
PRINT = 7.0
Slot = Literal["wide", "half"]
SLOT_WIDTHS: dict[Slot, float] = {"wide": SCREEN_WIDE, "half": SCREEN_HALF}


def slot_width(slot: Slot, *, media: Literal["screen", "print"] = "screen") -> float:
    """The width to draw a chart at for its place on the dashboard (`slot`) or on paper."""
    return PRINT if media == "print" else SLOT_WIDTHS[slot]


# One type scale for every chart: titles, text (ticks, labels) and annotations (values on
# bars, legends, counts). Nothing else sets a font size.
TITLE_PT = 9.5
TEXT_PT = 8.5
SMALL_PT = 7.5
FONT_SIZES = (TITLE_PT, TEXT_PT, SMALL_PT)

STYLE: dict[RcKeyType, Any] = {
    "svg.hashsalt": "csbot-encs",
    # Text stays text (crisp, selectable, small); DejaVu Sans is both matplotlib's own font
    # and on every machine with fonts-dejavu-core, so the layout's metrics hold.
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial"],
    "font.size": TEXT_PT,
    "axes.edgecolor": GRID,
    "axes.labelcolor": MUTED,
    "axes.titlesize": TITLE_PT,
    "axes.titleweight": "bold",
    "axes.titlecolor": INK,
    "axes.titlelocation": "left",
    "axes.titlepad": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "xtick.major.size": 0,
    "ytick.major.size": 0,
    "legend.frameon": False,
    "legend.fontsize": SMALL_PT,
    "text.color": INK,
    # "$" is money here, never the start of TeX math.
    "text.parse_math": False,
}
_ID = re.compile(r'\bid="([^"]+)"')


def _f(value: Decimal | None) -> float:
    return float(value) if value is not None else 0.0


def usd_tick(value: float, _pos: object = None) -> str:
    """$ with as few digits as the scale needs: $12k, $1.5k, $120, $0.25, $0.004."""
    sign = "−" if value < 0 else ""
    size = abs(value)
    if size >= 10_000:
        text = f"{size / 1000:,.0f}k"
    elif size >= 1000:
        text = f"{size / 1000:.1f}k"
    elif size >= 10 or size == 0:
        text = f"{size:,.0f}"
    elif size >= 0.1:
        text = f"{size:.2f}"
    else:
        text = f"{size:.2g}"
    return f"{sign}${text}"


@contextmanager
def _figure(size: tuple[float, float]) -> Iterator[Figure]:
    with matplotlib.rc_context(STYLE):
        yield Figure(figsize=size, layout="constrained")


def _svg(fig: Figure, *, name: str, label: str) -> str:
    """The figure as one `<svg>` element, ids scoped by `name`, labelled for screen readers."""
    buf = io.StringIO()
    with matplotlib.rc_context(STYLE):
        fig.savefig(
            buf,
            format="svg",
            metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
        )
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]  # no XML prolog or DOCTYPE inside an HTML page
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, flags=re.S)
    for old in set(_ID.findall(svg)):
        new = f"{name}-{old}"
        svg = svg.replace(f'id="{old}"', f'id="{new}"')
        svg = svg.replace(f"#{old})", f"#{new})").replace(f'"#{old}"', f'"#{new}"')
    safe = label.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return svg.replace(
        "<svg ",
        f'<svg class="chart chart-{name}" role="img" aria-label="{safe}" ',
        1,
    )


def _empty(name: str, title: str, message: str, width: float) -> str:
    with _figure((width, 1.4)) as fig:
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.set_title(title)
        ax.text(0.5, 0.4, message, ha="center", va="center", color=MUTED, transform=ax.transAxes)
        return _svg(fig, name=name, label=f"{title}: {message}")


def _value_grid(ax: Axes, axis: Literal["x", "y"] = "y") -> None:
    ax.grid(axis=axis, color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)


def _period_points(report: EncsReport) -> tuple[list[str], list[float]] | None:
    """(labels, ENCS) for every day or month of the period, zero where nothing was drafted;
    None when the report is not grouped by time."""
    unit = report.group_by
    if unit not in ("day", "month"):
        return None
    encs = {g.name: _f(g.figures.encs_usd) for g in report.groups or ()}
    start, last = report.start, report.last
    keys: list[tuple[str, str]] = []
    if unit == "day":
        day = start
        while day <= last:
            keys.append((day.isoformat(), f"{day:%b} {day.day}"))
            day += timedelta(days=1)
    else:
        month = start.replace(day=1)
        while month <= last:
            keys.append((month.strftime("%Y-%m"), month.strftime("%b %Y")))
            month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return [label for _, label in keys], [encs.get(key, 0.0) for key, _ in keys]


def _align_zero(left: Axes, bars: list[float], right: Axes, line: list[float]) -> None:
    """Put zero at the same height on both axes: one baseline the eye can trust for the
    daily bars and the running total."""
    limits = []
    for values in (bars, line):
        low, high = min(0.0, *values), max(0.0, *values)
        pad = (high - low) * 0.06 or 1.0
        limits.append((low - pad if low < 0 else 0.0, high + pad if high > 0 else 0.0))
    # The share of each axis below zero; both axes take the larger one.
    below = max(-low / (high - low) for low, high in limits)
    for axes, (low, high) in zip((left, right), limits, strict=True):
        if below >= 1:  # nothing above zero on either axis
            axes.set_ylim(low, 0)
            continue
        low = min(low, -below * high / (1 - below)) if below else 0.0
        high = max(high, -low * (1 - below) / below) if below else high
        axes.set_ylim(low, high)


def encs_over_time(report: EncsReport, *, width: float = SCREEN_WIDE) -> str:
    """ENCS per day (or month) as bars, green above zero and red below, with the running
    total on a second axis: what finance asks first is "are we up, and since when"."""
    title = "ENCS per day" if report.group_by == "day" else "ENCS per month"
    points = _period_points(report)
    if points is None:
        return _empty(
            "timeline", "ENCS over time", "Not grouped by day or month in this report.", width
        )
    labels, values = points
    if not any(values):
        return _empty("timeline", title, "No drafts in this period.", width)
    with _figure((width, min(3.4, max(2.5, width * 0.27)))) as fig:
        ax = fig.add_subplot()
        positions = list(range(len(values)))
        ax.bar(
            positions,
            values,
            color=[GOOD if v >= 0 else BAD for v in values],
            width=0.72,
            label=title.replace(" per ", " that "),
        )
        ax.axhline(0, color=MUTED, linewidth=0.8)
        _value_grid(ax)
        ax.yaxis.set_major_formatter(FuncFormatter(usd_tick))
        ax.yaxis.set_major_locator(MaxNLocator(5))
        step = max(1, len(labels) // 8)
        ax.set_xticks(positions[::step], labels[::step])
        ax.set_xlim(-0.6, len(values) - 0.4)
        running, total = [], 0.0
        for value in values:
            total += value
            running.append(total)
        cumulative = ax.twinx()
        cumulative.plot(positions, running, color=ACCENT, linewidth=1.8, label="Cumulative ENCS")
        cumulative.yaxis.set_major_formatter(FuncFormatter(usd_tick))
        cumulative.yaxis.set_major_locator(MaxNLocator(5))
        cumulative.spines["right"].set_visible(False)
        cumulative.tick_params(axis="y", colors=ACCENT)
        _align_zero(ax, values, cumulative, running)
        ax.set_title(f"{title} (bars) and cumulative (line)")
        return _svg(
            fig,
            name="timeline",
            label=f"{title}: total {usd_tick(total)} over {len(values)} periods",
        )


def action_shares(report: EncsReport, *, width: float = SCREEN_HALF) -> str:
    """What became of the drafts: used, edited, ignored, and the rest (failed, never
    answered, outliers), as 100 % bars of all drafts, for all drafts and for each model. The
    coloured parts are P(use), P(edit), P(ignore): the report's shares."""
    rows: list[tuple[str, Figures]] = [("All drafts", report.totals)]
    rows += [(g.name, g.figures) for g in report.by_model]
    rows = [(name, figures) for name, figures in rows if figures.acted]
    title = "What agents did with the drafts"
    if not rows:
        return _empty("shares", title, "No draft was acted on in this period.", width)
    if len(rows) == 2:  # one model: its row says the same as "All drafts"
        rows = rows[:1]
    height = 1.35 + 0.42 * len(rows)
    with _figure((width, height)) as fig:
        ax = fig.add_subplot()
        names = [name for name, _ in rows][::-1]
        drafts = [figures.drafts for _, figures in rows][::-1]
        left = [0.0] * len(rows)
        parts = [
            (
                KIND_LABELS[kind],
                colour,
                [_f(figures.shares[kind]) for _, figures in rows[::-1]],
            )
            for kind, colour in ACTION_COLOURS.items()
        ]
        parts.append(
            (
                OTHER_LABEL,
                GRID,
                [(figures.drafts - figures.acted) / figures.drafts for _, figures in rows[::-1]],
            )
        )
        for label, colour, shares in parts:
            bars = ax.barh(names, shares, left=left, color=colour, height=0.62, label=label)
            for bar, share in zip(bars, shares, strict=True):
                if share >= 0.08:
                    ax.text(
                        bar.get_x() + bar.get_width() / 2,
                        bar.get_y() + bar.get_height() / 2,
                        f"{share:.0%}",
                        ha="center",
                        va="center",
                        color=MUTED if colour == GRID else "white",
                        fontsize=SMALL_PT,
                        fontweight="bold",
                    )
            left = [a + b for a, b in zip(left, shares, strict=True)]
        for y, n in enumerate(drafts):
            ax.text(1.02, y, f"n={n:,}", va="center", color=MUTED, fontsize=SMALL_PT)
        ax.set_xlim(0, 1)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.0%}"))
        ax.spines["left"].set_visible(False)
        ax.spines["bottom"].set_visible(False)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1])
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=4, handlelength=1)
        ax.set_title(title, pad=22)
        return _svg(
            fig,
            name="shares",
            label=f"{title} (shares of all drafts): "
            + ", ".join(f"{KIND_LABELS[k]} {_f(v):.0%}" for k, v in report.totals.shares.items()),
        )


def cost_by_tier(rows: Sequence[TierCost], *, width: float = SCREEN_HALF) -> str:
    """Model cost per cascade tier (rows from `accounting.dashboard.tier_costs`): where the
    money goes, and how much the cache and the cheap tiers carry."""
    title = "Model cost by cascade tier"
    if not rows:
        return _empty("tiers", title, "No attempts in this period.", width)
    with _figure((width, 2.7)) as fig:
        ax = fig.add_subplot()
        labels = [row.label for row in rows]
        costs = [_f(row.cost_usd) for row in rows]
        colours = [GOOD if row.tier == 0 else ACCENT for row in rows]
        bars = ax.bar(labels, costs, color=colours, width=0.6)
        top = max(costs) or 1.0
        for bar, row, cost in zip(bars, rows, costs, strict=True):
            ax.text(
                bar.get_x() + bar.get_width() / 2,
                cost + top * 0.03,
                f"{usd_tick(cost)}\n{row.attempts:,} attempts",
                ha="center",
                va="bottom",
                fontsize=SMALL_PT,
                color=INK,
            )
        ax.set_ylim(0, top * 1.35)
        _value_grid(ax)
        ax.yaxis.set_major_formatter(FuncFormatter(usd_tick))
        ax.yaxis.set_major_locator(MaxNLocator(4))
        ax.set_title(title)
        return _svg(
            fig,
            name="tiers",
            label=f"{title}: "
            + ", ".join(f"{row.label} {usd_tick(c)}" for row, c in zip(rows, costs, strict=True)),
        )


def encs_by_model(
    groups: Sequence[Group],
    *,
    width: float = SCREEN_HALF,
    title: str = "ENCS by model",
    name: str = "models",
) -> str:
    """ENCS per model that wrote the final draft (plus cache hits and failed drafts): labour
    saved minus what that model's drafts cost (`report.by_model`). With `report.by_intent`:
    the same per intent of the customer's message."""
    groups = [g for g in groups if g.figures.messages]
    if not groups:
        return _empty(name, title, "No drafts in this period.", width)
    groups = sorted(groups, key=lambda g: _f(g.figures.encs_usd))
    height = 1.2 + 0.42 * len(groups)
    with _figure((width, height)) as fig:
        ax = fig.add_subplot()
        names = [g.name for g in groups]
        values = [_f(g.figures.encs_usd) for g in groups]
        ax.barh(names, values, color=[GOOD if v >= 0 else BAD for v in values], height=0.6)
        ax.axvline(0, color=MUTED, linewidth=0.8)
        span = max(abs(v) for v in values) or 1.0
        for y, (group, value) in enumerate(zip(groups, values, strict=True)):
            per = group.figures.encs_per_message_usd
            note = usd_tick(value) + (f"  ({usd_tick(_f(per))}/msg)" if per else "")
            # Right of the bar, or right of zero for a loss: never over the model names.
            ax.text(
                max(value, 0.0) + span * 0.02,
                y,
                note,
                va="center",
                ha="left",
                fontsize=SMALL_PT,
                color=INK if value >= 0 else BAD,
            )
        low, high = min(0.0, *values), max(0.0, *values)
        ax.set_xlim(low - span * 0.04 if low < 0 else 0, high + span * 0.6)
        _value_grid(ax, "x")
        ax.xaxis.set_major_formatter(FuncFormatter(usd_tick))
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.spines["left"].set_visible(False)
        ax.set_title(title)
        return _svg(
            fig,
            name=name,
            label=f"{title}: "
            + ", ".join(f"{n} {usd_tick(v)}" for n, v in zip(names, values, strict=True)),
        )


def break_even(target: BreakEvenTarget, *, width: float = SCREEN_WIDE) -> str:
    """One break-even target (a policy or an endpoint): cumulative net savings against
    cumulative fixed costs, month by month; where the first line crosses the second, the
    fixed costs have paid back."""
    kind = "Policy" if target.target == "policy" else "Model"
    title = f"{kind} {target.name}: break-even"
    name = f"breakeven-{target.target}-{target.id}"
    series = target.series
    if not series:
        return _empty(name, title, "No months to show.", width)
    with _figure((width, 2.7)) as fig:
        ax = fig.add_subplot()
        months = [p.month.strftime("%b %Y") for p in series]
        saved = [_f(p.cumulative_net_savings_usd) for p in series]
        fixed = [_f(p.cumulative_fixed_costs_usd) for p in series]
        x = list(range(len(series)))
        ax.fill_between(
            x,
            saved,
            fixed,
            where=[s >= f for s, f in zip(saved, fixed, strict=True)],
            color=GOOD,
            alpha=0.12,
            interpolate=True,
        )
        ax.fill_between(
            x,
            saved,
            fixed,
            where=[s < f for s, f in zip(saved, fixed, strict=True)],
            color=BAD,
            alpha=0.08,
            interpolate=True,
        )
        ax.plot(
            x,
            saved,
            color=GOOD,
            linewidth=2,
            marker="o",
            markersize=3.5,
            label="Cumulative net savings (ENCS)",
        )
        ax.plot(
            x,
            fixed,
            color=BAD,
            linewidth=1.6,
            linestyle="--",
            marker="s",
            markersize=3,
            label="Cumulative fixed costs",
        )
        ax.axhline(0, color=MUTED, linewidth=0.6)
        step = max(1, len(months) // 8)
        ax.set_xticks(x[::step], months[::step])
        if len(x) == 1:
            ax.set_xlim(-0.5, 0.5)
        _value_grid(ax)
        ax.yaxis.set_major_formatter(FuncFormatter(usd_tick))
        ax.yaxis.set_major_locator(MaxNLocator(5))
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=2, handlelength=1.6)
        if target.paid_back:
            status = "paid back"
        elif target.months_to_pay_back is not None:
            status = f"{target.months_to_pay_back} months to pay back"
        else:
            status = "not paying back at this volume"
        ax.set_title(f"{title} — {status}", pad=22)
        return _svg(
            fig,
            name=name,
            label=f"{title}: net savings {usd_tick(saved[-1])} against fixed costs "
            f"{usd_tick(fixed[-1])}, {status}",
        )
