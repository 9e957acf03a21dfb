"""The ENCS report as people read it: a standalone printable HTML document and its PDF.

`report_html` and `report_pdf` take a report dict from `accounting.selectors.encs_report`
(group it by "day" or "month" to get the ENCS-over-time chart; any other grouping is shown
as a table) and are what the `encs_report` command, the stored monthly reports and the
e-mails use; the dashboard shows the same `report_context`, so page and PDF agree.

Figures are formatted here, once, from the report's decimal strings (never through float);
the charts come from accounting.charts as inline SVG, so the document needs no other file.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from django.template.loader import render_to_string
from django.utils.safestring import SafeString, mark_safe

from accounting import charts
from accounting.dashboard import names, tier_costs
from accounting.facts import Scope

KIND_LABELS = {
    "use": "Used as is",
    "edit": "Edited",
    "ignore": "Ignored",
    "none": "Failed, answered unaided",
    "unused": "Not answered",
    "outlier": "Answered after too long (outlier)",
}
MINUS = "−"


def usd(value: str | Decimal | None, places: int = 2) -> str:
    """$1,234.56 / −$0.30; a value too small for `places` gets the digits it needs
    ($0.000011, not $0.0000), since per-draft model costs are often that small."""
    if value is None or value == "":
        return "—"
    number = Decimal(value)
    if number and abs(number) < Decimal(10) ** -places:
        places = -number.adjusted() + 1
    rounded = number.quantize(Decimal(10) ** -places, rounding=ROUND_HALF_UP)
    sign = MINUS if rounded < 0 else ""
    return f"{sign}${abs(rounded):,.{places}f}"


def pct(value: str | Decimal | None, places: int = 1) -> str:
    """A share (0.3333) as a percentage (33.3%)."""
    if value is None or value == "":
        return "—"
    share = (Decimal(value) * 100).quantize(Decimal(10) ** -places, rounding=ROUND_HALF_UP)
    return f"{MINUS if share < 0 else ''}{abs(share)}%"


def seconds(value: str | Decimal | None) -> str:
    if value is None or value == "":
        return "—"
    number = Decimal(value).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    return f"{number.normalize() if number == number.to_integral() else number:f} s"


def _tone(value: str | None) -> str:
    if value is None:
        return ""
    return "good" if Decimal(value) > 0 else "bad" if Decimal(value) < 0 else ""


def scope_of(report: dict[str, Any]) -> Scope:
    """The scope a report was computed for (its `to` is the last day, inclusive)."""
    return Scope(
        start=date.fromisoformat(report["from"]),
        end=date.fromisoformat(report["to"]) + timedelta(days=1),
        team_ids=tuple(report["teams"]) if report.get("teams") is not None else None,
        policy_ids=tuple(report["policies"]) if report.get("policies") is not None else None,
    )


def _kpis(report: dict[str, Any]) -> list[dict[str, Any]]:
    drafts = report["drafts"]
    per_draft = Decimal(report["model_cost_usd"]) / drafts if drafts else None
    all_paid = Decimal(report["all_paid_cost_usd"])
    saved = Decimal(report["cascade_savings_usd"])
    return [
        {
            "key": "encs_usd",
            "label": "ENCS",
            "value": usd(report["encs_usd"]),
            "raw": report["encs_usd"],
            "note": "labour savings − model cost",
            "tone": _tone(report["encs_usd"]),
            "lead": True,
        },
        {
            "key": "encs_per_message_usd",
            "label": "ENCS per message",
            "value": usd(report["encs_per_message_usd"], 4),
            "raw": report["encs_per_message_usd"],
            "note": f"over {report['messages']:,} messages",
            "tone": _tone(report["encs_per_message_usd"]),
        },
        {
            "key": "labor_savings_usd",
            "label": "Labour savings",
            "value": usd(report["labor_savings_usd"]),
            "raw": report["labor_savings_usd"],
            "note": "agent time saved × agent rate",
        },
        {
            "key": "model_cost_usd",
            "label": "Model cost",
            "value": usd(report["model_cost_usd"]),
            "raw": report["model_cost_usd"],
            "note": f"{drafts:,} drafts"
            + (f", {usd(per_draft, 4)} each" if per_draft is not None else ""),
        },
        {
            "key": "cascade_savings_usd",
            "label": "Cascade savings",
            "value": usd(saved),
            "raw": report["cascade_savings_usd"],
            "note": f"vs {usd(all_paid)} all-paid"
            + (f" ({pct(saved / all_paid)} less)" if all_paid else ""),
            "tone": _tone(report["cascade_savings_usd"]),
        },
    ]


def _figures(row: dict[str, Any], name: str) -> dict[str, Any]:
    """One table row (a model, a team, …) of formatted figures."""
    return {
        "name": name,
        "messages": row["messages"],
        "drafts": row["drafts"],
        "shares": {k: pct(v, 0) for k, v in row["shares"].items()},
        "acted": sum(row["actions"][k] for k in ("use", "edit", "ignore")),
        "labor_savings": usd(row["labor_savings_usd"]),
        "model_cost": usd(row["model_cost_usd"]),
        "encs": usd(row["encs_usd"]),
        "encs_raw": row["encs_usd"],
        "encs_tone": _tone(row["encs_usd"]),
        "encs_per_message": usd(row["encs_per_message_usd"], 4),
    }


def _baseline(report: dict[str, Any], team_names: dict[int, str]) -> dict[str, Any]:
    rows = []
    for team_id, baseline in report["baselines"].items():
        ci = baseline["ci95_seconds"]
        rows.append(
            {
                "team": team_names.get(int(team_id), f"Team {team_id}"),
                "seconds": seconds(baseline["seconds"]),
                "source": baseline["source"],
                "sample": baseline["sample"],
                "min_sample": baseline["min_sample"],
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
    return {"summary": summary, "note": note, "source": report["baseline_source"], "rows": rows}


def _decomposition(report: dict[str, Any]) -> dict[str, Any] | None:
    d = report["decomposition"]
    if "p" not in d:
        return None
    return {
        "rows": [
            {"label": label, "p": pct(d["p"][k], 2), "s": usd(d["s_usd"][k], 4)}
            for k, label in KIND_LABELS.items()
        ],
        "drafts": d["drafts"],
        "c": usd(d["c_usd"], 4),
        "per_draft": usd(d["encs_per_draft_usd"], 4),
        "encs": usd(d["encs_usd"]),
    }


def _break_even(target: dict[str, Any]) -> dict[str, Any]:
    months = target["months_to_pay_back"]
    if target["paid_back"]:
        status, tone = "Paid back", "good"
    elif months is not None:
        status, tone = f"{months:g} months to pay back", ""
    else:
        status, tone = "Not paying back at this volume", "bad"
    volume = target["break_even_messages_per_year"]
    return {
        "kind": "Policy" if target["target"] == "policy" else "Model",
        "name": target["name"],
        "since": target["since"],
        "one_off": usd(target["one_off_usd"]),
        "monthly": usd(target["monthly_usd"]),
        "fixed_costs": usd(target["fixed_costs_usd"]),
        "net_savings": usd(target["cumulative_net_savings_usd"]),
        "monthly_net_savings": usd(target["monthly_net_savings_usd"]),
        "messages": target["messages"],
        "status": status,
        "tone": tone,
        "volume": f"{volume:,}" if volume is not None else "—",
        "chart": mark_safe(charts.break_even(target)),  # noqa: S308 - our own SVG
    }


def report_context(
    report: dict[str, Any],
    *,
    tiers: list[dict[str, Any]],
    media: Literal["screen", "print"] = "screen",
) -> dict[str, Any]:
    """Everything the report and the dashboard show, formatted: KPIs, action shares,
    baseline, per-model (and per-group) tables, decomposition, break-even, and the charts
    sized for `media`."""
    team_ids = sorted({int(t) for t in report["baselines"]} | set(report.get("teams") or []))
    named = names(team_ids=team_ids, policy_ids=report.get("policies"))
    handle = report["handle_seconds"]
    actions = [
        {
            "kind": kind,
            "label": KIND_LABELS[kind],
            "count": report["actions"][kind],
            "share": pct(report["shares"][kind]),
            "raw": report["shares"][kind],
            "handle": seconds(handle[kind]),
        }
        for kind in ("use", "edit", "ignore")
    ]
    group_by = report.get("group_by")
    other_groups = group_by not in (None, "day", "month", "model", "intent")
    # On paper every chart spans the page; on screen they sit in full- and half-width cards.
    width: dict[str, Any] = {"width": charts.PRINT} if media == "print" else {}
    svg: dict[str, SafeString] = {
        # mark_safe: SVG we drew ourselves; matplotlib escapes the names inside it.
        "timeline": mark_safe(charts.encs_over_time(report, **width)),  # noqa: S308
        "shares": mark_safe(charts.action_shares(report, **width)),  # noqa: S308
        "tiers": mark_safe(charts.cost_by_tier(tiers, **width)),  # noqa: S308
        "models": mark_safe(charts.encs_by_model(report, **width)),  # noqa: S308
        "intents": mark_safe(  # noqa: S308
            charts.encs_by_model(
                report, key="by_intent", title="ENCS by intent", name="intents", **width
            )
        ),
    }
    return {
        "report": report,
        "scope_teams": [named["teams"].get(t, f"Team {t}") for t in report.get("teams") or []],
        "scope_policies": [
            named["policies"].get(p, f"Policy {p}") for p in report.get("policies") or []
        ],
        "kpis": _kpis(report),
        "actions": actions,
        "held_out": report["held_out"],
        "unanswered": report["unanswered_drafts"],
        "outliers": report["outliers"],
        "no_draft": report["actions"]["none"],
        "baseline": _baseline(report, named["teams"]),
        "all_paid": {
            "cost": usd(report["all_paid_cost_usd"]),
            "encs": usd(report["encs_all_paid_usd"]),
            "saved": usd(report["cascade_savings_usd"]),
        },
        "models": [_figures(g, g["group"]) for g in report.get("by_model", [])],
        "intents": [_figures(g, g["group"]) for g in report.get("by_intent", [])],
        "group_by": group_by if other_groups else None,
        "groups": [_figures(g, g["group"]) for g in report.get("groups", [])]
        if other_groups
        else [],
        "decomposition": _decomposition(report),
        "tiers": [{**row, "cost": usd(row["cost_usd"], 4)} for row in tiers],
        "break_even": [_break_even(t) for t in report["break_even"]["targets"]],
        "charts": svg,
    }


def whatif_display(result: dict[str, Any]) -> dict[str, Any]:
    """`engine.whatif`'s figures with a `display` dict of formatted ones beside them."""
    return {
        **result,
        "display": {
            "per_message": usd(result["encs_per_message_usd"], 4),
            "per_year": usd(result["encs_per_year_usd"], 0),
            "messages": f"{result['messages_per_year']:,}",
            "break_even": usd(result["break_even_cost_per_response_usd"], 4),
            **{f"s_{k}": usd(v, 4) for k, v in result["s_usd"].items()},
        },
    }


def report_html(report: dict[str, Any], *, title: str) -> str:
    """The report as one self-contained HTML document (styles and charts inline), fit to
    print on A4 and to attach to an e-mail."""
    context = report_context(report, tiers=tier_costs(scope_of(report)), media="print")
    return render_to_string("accounting/report.html", {**context, "title": title})


def report_pdf(report: dict[str, Any], *, title: str) -> bytes:
    """The same document as a PDF (WeasyPrint)."""
    return html_to_pdf(report_html(report, title=title))


def html_to_pdf(html: str) -> bytes:
    """A rendered report_html document as PDF: callers that need both formats render the
    charts once."""
    # Imported here: WeasyPrint loads Pango through cffi, which only the PDF path needs.
    from weasyprint import HTML

    pdf: bytes = HTML(string=html).write_pdf()
    return pdf
