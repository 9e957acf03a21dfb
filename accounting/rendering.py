"""The ENCS report as people read it: a standalone printable HTML document and its PDF.

`report_html` and `report_pdf` take an `EncsReport` from `accounting.selectors.encs_figures`
(group it by "day" or "month" to get the ENCS-over-time chart; any other grouping is shown
as a table) and are what the `encs_report` command, the stored monthly reports and the
e-mails use; the dashboard shows the same `report_context`, so page and PDF agree.

Figures are formatted here, once, from the report's Decimals (never through float);
the charts come from accounting.charts as inline SVG, so the document needs no other file.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from django.template.loader import render_to_string
from django.utils.safestring import SafeString, mark_safe

from accounting import charts
from accounting.dashboard import names, tier_costs
from accounting.facts import Scope
from accounting.figures import (
    ACTED_KINDS,
    KIND_LABELS,
    BreakEvenTarget,
    Decomposition,
    EncsReport,
    Figures,
    Group,
    TierCost,
    WhatIf,
    plain,
)
from accounting.knowledge import (
    HEAVY_EDIT,
    STALE_HEAVY_SHARE,
    STALE_MEAN_EDIT,
    STALE_MIN_DRAFTS,
    ContentValue,
    KnowledgeReport,
    knowledge_report,
)
from accounting.wait import WaitStats, wait_stats

MINUS = "−"


def usd(value: Decimal | None, places: int = 2) -> str:
    """$1,234.56 / −$0.30; a value too small for `places` gets the digits it needs
    ($0.000011, not $0.0000), since per-draft model costs are often that small."""
    if value is None:
        return "—"
    number = value
    if number and abs(number) < Decimal(10) ** -places:
        places = -number.adjusted() + 1
    rounded = number.quantize(Decimal(10) ** -places, rounding=ROUND_HALF_UP)
    sign = MINUS if rounded < 0 else ""
    return f"{sign}${abs(rounded):,.{places}f}"


def pct(value: Decimal | None, places: int = 1) -> str:
    """A share (0.3333) as a percentage (33.3%)."""
    if value is None:
        return "—"
    share = (value * 100).quantize(Decimal(10) ** -places, rounding=ROUND_HALF_UP)
    return f"{MINUS if share < 0 else ''}{abs(share)}%"


def seconds(value: Decimal | None) -> str:
    if value is None:
        return "—"
    number = value.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    return f"{number.normalize() if number == number.to_integral() else number:f} s"


def _tone(value: Decimal | None) -> str:
    if value is None:
        return ""
    return "good" if value > 0 else "bad" if value < 0 else ""


def _raw(value: Decimal | None) -> str:
    """A figure as the API writes it, for data-* attributes that tests and scripts read."""
    return "" if value is None else plain(value)


def scope_of(report: EncsReport) -> Scope:
    """The scope a report was computed for."""
    return Scope(
        start=report.start,
        end=report.last + timedelta(days=1),
        team_ids=report.teams,
        policy_ids=report.policies,
    )


def _kpis(figures: Figures) -> list[dict[str, Any]]:
    per_draft = figures.cost_per_draft_usd
    all_paid, saved = figures.all_paid_cost_usd, figures.cascade_savings_usd
    return [
        {
            "key": "encs_usd",
            "label": "ENCS",
            "value": usd(figures.encs_usd),
            "raw": _raw(figures.encs_usd),
            "note": "labour savings − model cost",
            "tone": _tone(figures.encs_usd),
            "lead": True,
        },
        {
            "key": "encs_per_message_usd",
            "label": "ENCS per message",
            "value": usd(figures.encs_per_message_usd, 4),
            "raw": _raw(figures.encs_per_message_usd),
            "note": f"over {figures.messages:,} messages",
            "tone": _tone(figures.encs_per_message_usd),
        },
        {
            "key": "labor_savings_usd",
            "label": "Labour savings",
            "value": usd(figures.labor_savings_usd),
            "raw": _raw(figures.labor_savings_usd),
            "note": "agent time saved × agent rate",
        },
        {
            "key": "model_cost_usd",
            "label": "Model cost",
            "value": usd(figures.model_cost_usd),
            "raw": _raw(figures.model_cost_usd),
            "note": f"{figures.drafts:,} drafts"
            + (f", {usd(per_draft, 4)} each" if per_draft is not None else ""),
        },
        {
            "key": "cascade_savings_usd",
            "label": "Cascade savings",
            "value": usd(saved),
            "raw": _raw(saved),
            "note": f"vs {usd(all_paid)} all-paid"
            + (f" ({pct(saved / all_paid)} less)" if all_paid else ""),
            "tone": _tone(saved),
        },
    ]


def _figures(group: Group) -> dict[str, Any]:
    """One table row (a model, a team, …) of formatted figures."""
    row = group.figures
    return {
        "name": group.name,
        "messages": row.messages,
        "drafts": row.drafts,
        "shares": {k: pct(v, 0) for k, v in row.shares.items()},
        "acted": row.acted,
        "labor_savings": usd(row.labor_savings_usd),
        "model_cost": usd(row.model_cost_usd),
        "encs": usd(row.encs_usd),
        "encs_raw": _raw(row.encs_usd),
        "encs_tone": _tone(row.encs_usd),
        "encs_per_message": usd(row.encs_per_message_usd, 4),
    }


def _baseline(report: EncsReport, team_names: dict[int, str]) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for team_id, baseline in report.baselines.items():
        ci = baseline.ci95_seconds
        rows.append(
            {
                "team": team_names.get(team_id, f"Team {team_id}"),
                "seconds": seconds(baseline.seconds),
                "source": baseline.source,
                "sample": baseline.sample,
                "min_sample": baseline.min_sample,
                "ci": f"{seconds(ci[0])} – {seconds(ci[1])}" if ci else None,
            }
        )
    single = rows[0] if len(rows) == 1 else None
    if single is None:
        summary, note = ("per team", f"{len(rows)} teams, see below") if rows else ("—", "no team")
    elif single["source"] == "measured":
        summary = single["seconds"]
        note = f"measured on {single['sample']:,} held-out replies" + (
            f", 95% CI {single['ci']}" if single["ci"] else ""
        )
    else:
        summary = single["seconds"]
        note = (
            f"configured default ({single['sample']:,} of {single['min_sample']:,} "
            "held-out replies needed to measure it)"
        )
    return {
        "summary": summary,
        "note": note,
        "source": report.baseline_source,
        "raw": "" if report.baseline_seconds is None else str(report.baseline_seconds),
        "rows": rows,
    }


def _decomposition(d: Decomposition | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {
        "rows": [
            {"label": label, "p": pct(d.p[k], 2), "s": usd(d.s_usd[k], 4)}
            for k, label in KIND_LABELS.items()
        ],
        "drafts": d.drafts,
        "c": usd(d.c_usd, 4),
        "per_draft": usd(d.encs_per_draft_usd, 4),
        "encs": usd(d.encs_usd),
    }


def _wait(figures: Figures, stats: WaitStats | None) -> dict[str, Any]:
    """ "Waiting for drafts": the sums (engine) and, when given, the spread (accounting.wait)."""
    return {
        "waited": figures.waited_drafts,
        "seconds": seconds(figures.wait_seconds),
        "cost": usd(figures.wait_cost_usd),
        "cost_raw": _raw(figures.wait_cost_usd),
        "encs": usd(figures.encs_usd),
        "if_instant": usd(figures.encs_if_instant_usd),
        "if_instant_raw": _raw(figures.encs_if_instant_usd),
        "per_draft": usd(figures.decomposition.w_usd, 4) if figures.decomposition else None,
        "acted": stats.acted if stats is not None else None,
        "share": pct(stats.share) if stats is not None else None,
        "p50": seconds(stats.p50_seconds) if stats is not None else None,
        "p95": seconds(stats.p95_seconds) if stats is not None else None,
    }


def _break_even(target: BreakEvenTarget, *, width: float) -> dict[str, Any]:
    months = target.months_to_pay_back
    if target.paid_back:
        status, tone = "Paid back", "good"
    elif months is not None:
        status, tone = f"{months:g} months to pay back", ""
    else:
        status, tone = "Not paying back at this volume", "bad"
    volume = target.break_even_messages_per_year
    return {
        "kind": "Policy" if target.target == "policy" else "Model",
        "name": target.name,
        "since": target.since.strftime("%Y-%m"),
        "one_off": usd(target.one_off_usd),
        "monthly": usd(target.monthly_usd),
        "fixed_costs": usd(target.fixed_costs_usd),
        "net_savings": usd(target.cumulative_net_savings_usd),
        "monthly_net_savings": usd(target.monthly_net_savings_usd),
        "messages": target.messages,
        "status": status,
        "tone": tone,
        "volume": f"{volume:,}" if volume is not None else "—",
        "chart": mark_safe(charts.break_even(target, width=width)),  # noqa: S308 - our own SVG
    }


def report_context(
    report: EncsReport,
    *,
    tiers: list[TierCost],
    media: Literal["screen", "print"] = "screen",
    wait: WaitStats | None = None,
) -> dict[str, Any]:
    """Everything the report and the dashboard show, formatted: KPIs, action shares,
    baseline, per-model (and per-group) tables, decomposition, break-even, and the charts
    sized for `media`."""
    totals = report.totals
    team_ids = sorted(set(report.baselines) | set(report.teams or ()))
    named = names(team_ids=team_ids, policy_ids=list(report.policies or ()))
    actions = [
        {
            "kind": kind,
            "label": KIND_LABELS[kind],
            "count": totals.actions[kind],
            "share": pct(share),
            "raw": str(share),
            "handle": seconds(totals.handle_seconds[kind]),
        }
        for kind, share in totals.shares.items()
    ]
    group_by = report.group_by
    other_groups = group_by not in (None, "day", "month", "model", "intent")

    # Each chart is drawn at the width of its card (templates/accounting/dashboard.html: the
    # timeline, the intents and break-even span the page, the rest sit two to a row), so all
    # are shown at one scale; on paper every chart spans the page.
    def width(slot: charts.Slot) -> float:
        return charts.slot_width(slot, media=media)

    svg: dict[str, SafeString] = {
        # mark_safe: SVG we drew ourselves; matplotlib escapes the names inside it.
        "timeline": mark_safe(charts.encs_over_time(report, width=width("wide"))),  # noqa: S308
        "shares": mark_safe(charts.action_shares(report, width=width("half"))),  # noqa: S308
        "tiers": mark_safe(charts.cost_by_tier(tiers, width=width("half"))),  # noqa: S308
        "models": mark_safe(  # noqa: S308
            charts.encs_by_model(report.by_model, width=width("half"))
        ),
        "intents": mark_safe(  # noqa: S308
            charts.encs_by_model(
                report.by_intent, title="ENCS by intent", name="intents", width=width("wide")
            )
        ),
    }
    return {
        "report": report,
        "totals": totals,
        "scope_teams": [named["teams"].get(t, f"Team {t}") for t in report.teams or ()],
        "scope_policies": [named["policies"].get(p, f"Policy {p}") for p in report.policies or ()],
        "kpis": _kpis(totals),
        "actions": actions,
        "held_out": totals.held_out,
        "unanswered": totals.unanswered_drafts,
        "outliers": totals.outliers,
        "no_draft": totals.actions["none"],
        "baseline": _baseline(report, named["teams"]),
        "all_paid": {
            "cost": usd(totals.all_paid_cost_usd),
            "encs": usd(totals.encs_all_paid_usd),
            "saved": usd(totals.cascade_savings_usd),
        },
        "models": [_figures(g) for g in report.by_model],
        "intents": [_figures(g) for g in report.by_intent],
        "group_by": group_by if other_groups else None,
        "groups": [_figures(g) for g in report.groups or ()] if other_groups else [],
        "decomposition": _decomposition(totals.decomposition),
        "wait": _wait(totals, wait),
        "tiers": [
            {"label": t.label, "attempts": t.attempts, "ok": t.ok, "cost": usd(t.cost_usd, 4)}
            for t in tiers
        ],
        "break_even": [_break_even(t, width=width("wide")) for t in report.break_even.targets],
        "charts": svg,
    }


# Rows of each knowledge table on the page and in the report; the API pages through all of them.
KNOWLEDGE_ROWS = 10


def _content_row(value: ContentValue) -> dict[str, Any]:
    citing, edits = value.citing, value.edits
    return {
        "title": value.title,
        "live": value.live,
        "drafts": citing.drafts,
        "shared_drafts": f"{value.shared_drafts.normalize():f}",
        "actions": {k: citing.actions[k] for k in ACTED_KINDS},
        "mean_edit": "—" if edits.mean_edit_distance is None else f"{edits.mean_edit_distance:.2f}",
        "heavy": pct(edits.heavy_share, 0),
        "reviewed": edits.reviewed,
        "citing_encs": usd(citing.encs_usd),
        "encs": usd(value.shared_encs_usd),
        "encs_raw": _raw(value.shared_encs_usd),
        "encs_tone": _tone(value.shared_encs_usd),
        "version": value.version,
        "seen_version": value.seen_version,
        "newer_version": value.newer_version,
        "updated": value.updated_at.date().isoformat(),
    }


def knowledge_context(report: KnowledgeReport) -> dict[str, Any]:
    """The knowledge section of the dashboard and the report: the top articles and macros by
    ENCS, stale articles and the largest content gaps, formatted."""
    value, gaps = report.value, report.gaps
    return {
        "grounded_drafts": value.grounded_drafts,
        "grounded_encs": usd(value.grounded_encs_usd),
        "grounded_raw": _raw(value.grounded_encs_usd),
        "macro_drafts": value.macro_drafts,
        "macro_encs": usd(value.macro_encs_usd),
        "articles": [_content_row(a) for a in value.articles[:KNOWLEDGE_ROWS]],
        "articles_total": len(value.articles),
        "macros": [_content_row(m) for m in value.macros[:KNOWLEDGE_ROWS]],
        "macros_total": len(value.macros),
        "stale": [_content_row(a) for a in value.stale[:KNOWLEDGE_ROWS]],
        "stale_total": len(value.stale),
        "gaps": [
            {
                "count": g.count,
                "none_found": g.none_found,
                "ignored": g.ignored,
                "days": g.first_day.isoformat()
                if g.first_day == g.last_day
                else f"{g.first_day.isoformat()} – {g.last_day.isoformat()}",
                "examples": [e.text for e in g.examples],
            }
            for g in gaps.groups[:KNOWLEDGE_ROWS]
        ],
        "gaps_total": len(gaps.groups),
        "gap_turns": gaps.turns,
        "gaps_capped": gaps.capped,
        "rules": {
            "stale_min": STALE_MIN_DRAFTS,
            "stale_mean": f"{STALE_MEAN_EDIT}",
            "stale_heavy": pct(STALE_HEAVY_SHARE, 0),
            "heavy_edit": f"{HEAVY_EDIT}",
        },
    }


def whatif_display(result: WhatIf) -> dict[str, Any]:
    """`engine.whatif`'s figures for the what-if panel: as the API writes them (data-value)
    and formatted for people (`display`)."""
    return {
        **result.as_json(),
        "display": {
            "per_message": usd(result.encs_per_message_usd, 4),
            "per_year": usd(result.encs_per_year_usd, 0),
            "messages": f"{result.messages_per_year:,}",
            "break_even": usd(result.break_even_cost_per_response_usd, 4),
            **{f"s_{k}": usd(v, 4) for k, v in result.s_usd.items()},
        },
    }


def report_html(report: EncsReport, *, title: str, knowledge: KnowledgeReport | None = None) -> str:
    """The report as one self-contained HTML document (styles and charts inline), fit to
    print on A4 and to attach to an e-mail; with the knowledge section (computed for the
    report's scope and baselines unless given)."""
    scope = scope_of(report)
    context = report_context(report, tiers=tier_costs(scope), media="print", wait=wait_stats(scope))
    if knowledge is None:
        knowledge = knowledge_report(scope, baselines=report.baselines)
    return render_to_string(
        "accounting/report.html",
        {**context, "title": title, "knowledge": knowledge_context(knowledge)},
    )


def report_pdf(report: EncsReport, *, title: str) -> bytes:
    """The same document as a PDF (WeasyPrint)."""
    return html_to_pdf(report_html(report, title=title))


def html_to_pdf(html: str) -> bytes:
    """A rendered report_html document as PDF: callers that need both formats render the
    charts once."""
    # Imported here: WeasyPrint loads Pango through cffi, which only the PDF path needs.
    from weasyprint import HTML

    pdf: bytes = HTML(string=html).write_pdf()
    return pdf
