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

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from csbot.admin_records import RecordAdmin
from csbot.models import Team
from drafting.admin.confirm import confirm_page
from drafting.experiments import experiment_promote, experiment_start, experiment_stop
from drafting.models import CascadePolicy, Experiment, ExperimentArm

MAX_ARMS = 4


class StartForm(forms.Form):
    """What experiment_start needs; up to MAX_ARMS arms, blank rows ignored. The rules (two
    arms or more, shares adding up to 1, the team's own policies, one running per team) are
    the service's: its errors are shown on this form."""

    team = forms.ModelChoiceField(queryset=Team.objects.order_by("name"))
    name = forms.CharField(max_length=120)
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    seed = forms.IntegerField(
        required=False, min_value=0, help_text="Leave blank for a random one."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        policies = CascadePolicy.objects.select_related("team").order_by("team__name", "name")
        for i in range(MAX_ARMS):
            self.fields[f"arm_{i}_name"] = forms.CharField(max_length=60, required=False)
            self.fields[f"arm_{i}_policy"] = forms.ModelChoiceField(
                queryset=policies, required=False
            )
            self.fields[f"arm_{i}_share"] = forms.DecimalField(
                max_digits=5, decimal_places=4, required=False
            )

    def arms(self) -> list[tuple[str, CascadePolicy, Any]]:
        rows = []
        for i in range(MAX_ARMS):
            name, policy, share = (
                self.cleaned_data.get(f"arm_{i}_{k}") for k in ("name", "policy", "share")
            )
            if not (name or policy or share is not None):
                continue
            if not (name and policy and share is not None):
                self.add_error(f"arm_{i}_name", "An arm needs a name, a policy and a share.")
                continue
            rows.append((name, policy, share))
        return rows

    def arm_rows(self) -> list[list[forms.BoundField]]:
        return [
            [self[f"arm_{i}_{k}"] for k in ("name", "policy", "share")] for i in range(MAX_ARMS)
        ]


class _ArmChoice(forms.ModelChoiceField[ExperimentArm]):
    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.name} — policy {obj.policy.name} (share {obj.share})"


class PromoteForm(forms.Form):
    """The arm to promote, one of the experiment's own (already chosen when it has only one)."""

    arm = _ArmChoice(
        queryset=ExperimentArm.objects.none(), widget=forms.RadioSelect, empty_label=None
    )

    def __init__(self, data: QueryDict | None, *, experiment: Experiment) -> None:
        super().__init__(data)
        arms = experiment.arms.select_related("policy").order_by("position")
        field = self.fields["arm"]
        assert isinstance(field, _ArmChoice)
        field.queryset = arms
        if len(arms) == 1:
            self.initial["arm"] = arms[0].pk


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
                "start/",
                self.admin_site.admin_view(self.start_view),
                name="drafting_experiment_start",
            ),
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

    def _page(
        self,
        request: HttpRequest,
        experiment: Experiment,
        *,
        title: str,
        explanation: str,
        submit: str,
        form: forms.Form | None = None,
    ) -> HttpResponse:
        """The confirmation page of a stop or a promotion: the results come first."""
        return confirm_page(
            request,
            model_admin=self,
            original=experiment,
            title=title,
            evidence_url=f"{reverse('accounting:experiments')}?experiment={experiment.pk}",
            evidence="See the results (ENCS per message per arm, the intervals and the "
            "sequential verdict)",
            paragraphs=[explanation],
            submit=submit,
            form=form,
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
            request,
            experiment,
            title=f"Stop the experiment {experiment.name}?",
            explanation=f"New conversations of {experiment.team} will no longer be assigned to "
            "arms, and later drafts of the experiment's conversations use the team's active "
            "policy. The results are kept. This cannot be undone (start a new experiment "
            "instead).",
            submit="Yes, stop it",
        )

    def promote_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        experiment, user = self._experiment(request, pk)
        form = PromoteForm(
            request.POST if request.method == "POST" else None, experiment=experiment
        )
        if request.method == "POST":
            if not form.is_valid():  # no arm, or not one of this experiment's
                self.message_user(request, "Choose the arm to promote.", messages.ERROR)
                return redirect(reverse("admin:drafting_experiment_promote", args=[pk]))
            chosen: ExperimentArm = form.cleaned_data["arm"]
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
        running = experiment.status == Experiment.Status.RUNNING
        return self._page(
            request,
            experiment,
            title=f"Promote a winner of {experiment.name}?",
            explanation=f"The chosen arm's policy becomes the one active policy of "
            f"{experiment.team}{', and the experiment stops' if running else ''}.",
            submit="Yes, promote this arm",
            form=form,
        )

    def start_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request) or not isinstance(request.user, User):
            raise PermissionDenied
        form = StartForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            arms = form.arms()
            if not form.errors:
                try:
                    experiment = experiment_start(
                        team=form.cleaned_data["team"],
                        name=form.cleaned_data["name"],
                        arms=arms,
                        seed=form.cleaned_data["seed"],
                        note=form.cleaned_data["note"],
                        user=request.user,
                    )
                except ValidationError as exc:
                    found = exc.message_dict if hasattr(exc, "error_dict") else {"": exc.messages}
                    for field, errors in found.items():
                        form.add_error(field if field in form.fields else None, errors)
                else:
                    self.message_user(
                        request,
                        f"{experiment.name}: started (seed {experiment.seed}); new "
                        "conversations of the team are assigned to its arms.",
                        messages.SUCCESS,
                    )
                    return self._back(experiment)
        return TemplateResponse(
            request,
            "admin/drafting/experiment/start.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "Start an experiment",
                "form": form,
            },
        )
