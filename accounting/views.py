"""The ENCS dashboard (managers, team admins, superusers), its what-if calculator, and the
printable report as HTML and PDF for the same filters.

Scoping: a manager or team admin sees their own team only (another team's or policy's id is
answered 404, as if it did not exist), a superuser every team; agents get 403."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounting.dashboard import Viewer, agent_rate, dashboard_viewer, names, tier_costs
from accounting.engine import SettingsMissing
from accounting.facts import Scope
from accounting.figures import EncsReport, plain
from accounting.forms import EncsFilterForm, WhatIfForm, measured_encs, this_month
from accounting.knowledge import knowledge_report
from accounting.rendering import (
    knowledge_context,
    report_context,
    report_html,
    report_pdf,
    usd,
    whatif_display,
)
from accounting.reports import report_filename, report_title
from accounting.selectors import encs_figures
from accounting.wait import wait_stats
from accounting.withholding import withholding_display, withholding_stats

# Up to two months read best per day; longer periods per month.
DAILY_UP_TO_DAYS = 62


def timeline_unit(scope: Scope) -> str:
    return "day" if (scope.end - scope.start).days <= DAILY_UP_TO_DAYS else "month"


def _filters(request: HttpRequest) -> tuple[Viewer, EncsFilterForm]:
    viewer = dashboard_viewer(user=request.user)
    form = EncsFilterForm(request.GET, viewer=viewer, today=timezone.localdate())
    if form.not_visible:
        raise Http404("No such team or policy.")
    return viewer, form


def _quick_periods(form: EncsFilterForm, today: date) -> list[tuple[str, str]]:
    """Links to common periods with the same team and policy."""
    first, last = this_month(today)
    previous_last = first - timedelta(days=1)
    periods = [
        ("This month", first, last),
        ("Last month", previous_last.replace(day=1), previous_last),
        ("Last 90 days", today - timedelta(days=89), today),
        ("Year to date", today.replace(month=1, day=1), today),
    ]
    keep = {k: v for k, v in form.query().items() if k in ("team", "policy")}
    return [
        (label, urlencode({"from": start.isoformat(), "to": end.isoformat(), **keep}))
        for label, start, end in periods
    ]


def _whatif(
    data: Any, *, initial: dict[str, Any] | None
) -> tuple[WhatIfForm, dict[str, Any] | None]:
    """The what-if form and its result: for the submitted figures when there are any, else
    for `initial` (the period's own figures)."""
    submitted = data is not None and any(key.startswith("w-") for key in data)
    if submitted:
        form = WhatIfForm(data)
    else:
        form = WhatIfForm(data={f"w-{k}": v for k, v in (initial or {}).items()})
    return form, (whatif_display(form.result()) if form.is_valid() else None)


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    viewer, form = _filters(request)
    today = timezone.localdate()
    context: dict[str, Any] = {"form": form, "viewer": viewer}
    if not form.is_valid():
        # htmx does not swap error responses: its requests get the errors with a 200.
        status = 200 if request.htmx else 400  # type: ignore[attr-defined]
        return render(request, "accounting/dashboard.html", context, status=status)
    scope = form.scope()
    try:
        report = encs_figures(scope, group_by=timeline_unit(scope))
    except SettingsMissing as exc:
        context["missing"] = str(exc)
        return render(request, "accounting/dashboard.html", context)
    team_id = scope.team_ids[0] if scope.team_ids and len(scope.team_ids) == 1 else None
    settings_row = agent_rate(team_id=team_id, day=scope.end - timedelta(days=1))
    query = urlencode(form.query())
    # Without a rate in force (only team rows, all teams shown) the what-if has no defaults.
    whatif_form, result = (
        _whatif(
            request.GET,
            initial=WhatIfForm.initial_from(
                report,
                agent_hourly_usd=settings_row.agent_hourly_usd,
                default_baseline_seconds=settings_row.default_baseline_seconds,
            ),
        )
        if settings_row is not None
        else (None, None)
    )
    decomposition = report.totals.decomposition
    measured = decomposition.encs_per_draft_usd if decomposition is not None else None
    context.update(
        report_context(report, tiers=tier_costs(scope), wait=wait_stats(scope)),
        knowledge=knowledge_context(knowledge_report(scope, baselines=report.baselines)),
        withholding=withholding_display(withholding_stats(scope, baselines=report.baselines)),
        query=query,
        filter_items=sorted(form.query().items()),
        quick_periods=_quick_periods(form, today),
        whatif_form=whatif_form,
        whatif=result,
        measured=_measured(measured),
        measured_display=usd(measured, 4) if measured is not None else None,
    )
    return render(request, "accounting/dashboard.html", context)


@login_required
@require_GET
def whatif(request: HttpRequest) -> HttpResponse:
    """The what-if panel alone, recomputed for the submitted figures (htmx swaps it in)."""
    dashboard_viewer(user=request.user)
    form, result = _whatif(request.GET, initial=None)
    measured = measured_encs(request.GET.get("measured"))
    filter_items = sorted(
        (k, v) for k, v in request.GET.items() if k in ("from", "to", "team", "policy")
    )
    return render(
        request,
        "accounting/_whatif.html",
        {
            "whatif_form": form,
            "whatif": result,
            "measured": _measured(measured),
            "measured_display": usd(measured, 4) if measured is not None else None,
            "filter_items": filter_items,
        },
    )


def _measured(value: Decimal | None) -> str | None:
    """The measured ENCS per draft for the what-if panel's hidden field (None: no field)."""
    return None if value is None else plain(value)


def _report(request: HttpRequest) -> tuple[EncsReport, str] | HttpResponse:
    _viewer, form = _filters(request)
    if not form.is_valid():
        errors = "; ".join(f"{k}: {' '.join(str(e) for e in v)}" for k, v in form.errors.items())
        return HttpResponse(errors, status=400, content_type="text/plain; charset=utf-8")
    scope = form.scope()
    try:
        report = encs_figures(scope, group_by=timeline_unit(scope))
    except SettingsMissing as exc:
        return HttpResponse(str(exc), status=409, content_type="text/plain; charset=utf-8")
    teams = names(team_ids=list(scope.team_ids or ()), policy_ids=None)["teams"]
    return report, report_title(
        report, team_names=[teams[t] for t in scope.team_ids or () if t in teams]
    )


@login_required
@require_GET
def report_as_html(request: HttpRequest) -> HttpResponse:
    found = _report(request)
    if isinstance(found, HttpResponse):
        return found
    report, title = found
    response = HttpResponse(
        report_html(report, title=title), content_type="text/html; charset=utf-8"
    )
    response["Content-Disposition"] = f'inline; filename="{report_filename(report, "html")}"'
    return response


@login_required
@require_GET
def report_as_pdf(request: HttpRequest) -> HttpResponse:
    found = _report(request)
    if isinstance(found, HttpResponse):
        return found
    report, title = found
    response = HttpResponse(report_pdf(report, title=title), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{report_filename(report, "pdf")}"'
    return response
