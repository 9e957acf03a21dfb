"""The policy experiments page (managers, team admins, superusers): one experiment's results
per arm with 95 % intervals, each arm against the control, and the sequential verdict; a
list of the team's experiments to pick from. Stopping and promoting are the admin's
(drafting.admin.experiments).

Scoping as on the ENCS dashboard: a manager or team admin sees their own team's experiments
(another team's id is answered 404, as if it did not exist), a superuser every team's;
agents get 403."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounting.dashboard import dashboard_viewer
from accounting.engine import SettingsMissing
from accounting.experiments import LOOK_EVERY, LOOK_FROM, REFERENCE_MESSAGES, experiment_results
from drafting.models import Experiment


@login_required
@require_GET
def experiments(request: HttpRequest) -> HttpResponse:
    viewer = dashboard_viewer(user=request.user)
    listed = Experiment.objects.select_related("team", "winner").order_by("-started_at", "-id")
    if viewer.team_id is not None:
        listed = listed.filter(team_id=viewer.team_id)
    raw = request.GET.get("experiment", "")
    if raw:
        if not raw.isdigit():
            return HttpResponseBadRequest("experiment: an experiment's id (a whole number).")
        chosen = listed.filter(pk=int(raw)).first()
        if chosen is None:
            raise Http404("No such experiment.")
    else:
        # The running one first, else the newest.
        chosen = listed.filter(status=Experiment.Status.RUNNING).first() or listed.first()
    context: dict[str, Any] = {
        "experiments": list(listed),
        "chosen": chosen,
        "look_every": LOOK_EVERY,
        "look_from": LOOK_FROM,
        "reference_messages": REFERENCE_MESSAGES,
    }
    if chosen is not None:
        try:
            context["results"] = experiment_results(chosen)
        except SettingsMissing as exc:
            context["missing"] = str(exc)
    return render(request, "accounting/experiments.html", context)
