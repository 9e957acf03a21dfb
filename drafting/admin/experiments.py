"""Admin for policy experiments: read them with their arms, stop one, promote a winner.

An experiment is started by drafting.experiments.experiment_start (validated shares and
policies, one running per team); its arms never change after that, since changing a share
would move conversations between arms mid-experiment. So the admin pages are read-only
(csbot.admin_records), and the two decisions an admin takes are buttons on the experiment's
page, each through a confirmation page (a POST): "Stop" and "Promote a winner" (the arm's
policy becomes the team's active policy). Both go through drafting's services, which record
them in the audit log and the experiment's history under the admin who clicked. The results
are on the managers' experiments page (accounting), linked from here."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from csbot.admin_records import RecordAdmin
from drafting.experiments import experiment_promote, experiment_stop
from drafting.models import Experiment, ExperimentArm


class ExperimentArmInline(RecordAdmin, admin.TabularInline[ExperimentArm, Experiment]):
    model = ExperimentArm
    extra = 0
    fields = ("position", "name", "policy", "share")
    readonly_fields = ("position", "name", "policy", "share")


@admin.register(Experiment)
class ExperimentAdmin(RecordAdmin, admin.ModelAdmin[Experiment]):
    list_display = ["name", "team", "status", "started_at", "stopped_at", "winner"]
    list_filter = ["team", "status"]
    search_fields = ["name"]
    inlines = [ExperimentArmInline]
    list_select_related = ["team", "winner"]

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<int:pk>/stop/",
                self.admin_site.admin_view(self.stop_view),
                name="drafting_experiment_stop",
            ),
            path(
                "<int:pk>/promote/",
                self.admin_site.admin_view(self.promote_view),
                name="drafting_experiment_promote",
            ),
            *super().get_urls(),
        ]

    def _experiment(self, request: HttpRequest, pk: int) -> tuple[Experiment, User]:
        experiment = get_object_or_404(Experiment.objects.select_related("team"), pk=pk)
        if not self.has_view_permission(request, experiment) or not isinstance(request.user, User):
            raise PermissionDenied
        return experiment, request.user

    def _page(self, request: HttpRequest, experiment: Experiment, **context: Any) -> HttpResponse:
        return TemplateResponse(
            request,
            "admin/drafting/experiment/confirm.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "original": experiment,
                **context,
            },
        )

    def _back(self, experiment: Experiment) -> HttpResponse:
        return redirect(reverse("admin:drafting_experiment_change", args=[experiment.pk]))

    def stop_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        experiment, user = self._experiment(request, pk)
        if request.method == "POST":
            try:
                experiment_stop(experiment=experiment, user=user)
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"{experiment.name}: stopped. New drafts use the team's active policy.",
                    messages.SUCCESS,
                )
            return self._back(experiment)
        return self._page(
            request, experiment, title=f"Stop the experiment {experiment.name}?", action="stop"
        )

    def promote_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        experiment, user = self._experiment(request, pk)
        arms = list(experiment.arms.select_related("policy").order_by("position"))
        if request.method == "POST":
            chosen = next((a for a in arms if str(a.pk) == request.POST.get("arm")), None)
            if chosen is None:
                self.message_user(request, "Choose the arm to promote.", messages.ERROR)
                return redirect(reverse("admin:drafting_experiment_promote", args=[pk]))
            try:
                experiment_promote(experiment=experiment, arm=chosen, user=user)
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"{experiment.name}: arm {chosen.name} promoted; policy "
                    f"{chosen.policy.name} is now the team's active policy.",
                    messages.SUCCESS,
                )
            return self._back(experiment)
        return self._page(
            request,
            experiment,
            title=f"Promote a winner of {experiment.name}?",
            action="promote",
            arms=arms,
        )
