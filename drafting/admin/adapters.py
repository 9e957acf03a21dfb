"""Admin for fine-tuned adapters (DistillRun): what each run was trained on and cost, the
candidate against the current model on the same messages, and the decisions.

A run is a record (csbot.admin_records): training writes it, so its page is read-only. The
page adds what the raw fields do not show at a glance: the data snapshot, the hyper-parameters,
the loss curve (an inline SVG line chart: no JavaScript, a title and a description for screen
readers), the validation figures, and the shadow comparison (drafting.learning.adapter_compare:
candidate vs current on the same drafts, 95 % intervals).

The decisions are buttons on the page, each through a confirmation page that POSTs (CSRF):
start shadow (a share), stop shadow, try live in an experiment (a share), promote, roll back.
They call drafting.adapters, which checks the stage and audit-logs the change; its refusals
(ValueError subclasses) are shown as messages. Acting needs the change permission on distill
runs (a superuser has it); viewing needs the view permission. The admin is not scoped by team
(the admin site is for admins of every team: csbot.admin_site), as the other admin pages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from csbot.admin_records import RecordAdmin
from drafting import adapters
from drafting.admin.confirm import confirm_page
from drafting.learning.adapter_compare import compare_shadow
from drafting.models import DistillRun

CHANGE_PERMISSION = "drafting.change_distillrun"


# --- The loss curve as an SVG line chart --------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    position: float  # in the chart's pixels
    label: str


@dataclass(frozen=True)
class LossChart:
    """Everything the template needs to draw the curve; coordinates in SVG pixels."""

    width: int
    height: int
    left: int
    top: int
    right: int  # x of the plot's right edge
    bottom: int  # y of the plot's bottom edge
    training: str  # polyline points "x,y x,y …"
    validation: str
    validation_points: tuple[tuple[float, float, str], ...]  # x, y, the value as text
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    description: str


def _points(points: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


def loss_chart(
    curve: Sequence[dict[str, Any]], *, width: int = 520, height: int = 220
) -> LossChart | None:
    """The run's loss curve (training loss per step, validation loss per evaluation) scaled
    into a `width` × `height` chart; None when the curve holds no loss."""
    training = [
        (float(p["step"]), float(p["loss"]))
        for p in curve
        if p.get("loss") is not None and p.get("step") is not None
    ]
    validation = [
        (float(p["step"]), float(p["validation_loss"]))
        for p in curve
        if p.get("validation_loss") is not None and p.get("step") is not None
    ]
    values = [v for _, v in training + validation]
    if not values:
        return None
    left, top, right_margin, bottom_margin = 52, 12, 16, 36
    right, bottom = width - right_margin, height - bottom_margin
    max_step = max([s for s, _ in training + validation] + [1.0])
    low, high = min(values), max(values)
    if high - low < 1e-9:  # a flat curve: give it some room
        low, high = low - 0.5, high + 0.5
    pad = (high - low) * 0.05
    low, high = low - pad, high + pad

    def x(step: float) -> float:
        return left + (right - left) * step / max_step

    def y(loss: float) -> float:
        return bottom - (bottom - top) * (loss - low) / (high - low)

    y_ticks = tuple(
        Tick(y(low + (high - low) * i / 4), f"{low + (high - low) * i / 4:.2f}") for i in range(5)
    )
    steps = sorted({0, round(max_step / 2), round(max_step)})
    x_ticks = tuple(Tick(x(s), str(s)) for s in steps)
    parts = []
    if training:
        parts.append(
            f"training loss {training[0][1]:.3f} at step {training[0][0]:.0f} to "
            f"{training[-1][1]:.3f} at step {training[-1][0]:.0f}"
        )
    if validation:
        parts.append(
            "validation loss " + ", ".join(f"{v:.3f} at step {s:.0f}" for s, v in validation)
        )
    return LossChart(
        width=width,
        height=height,
        left=left,
        top=top,
        right=right,
        bottom=bottom,
        training=_points([(x(s), y(v)) for s, v in training]),
        validation=_points([(x(s), y(v)) for s, v in validation]),
        validation_points=tuple((x(s), y(v), f"{v:.3f}") for s, v in validation),
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        description="; ".join(parts) + ".",
    )


# --- The decisions --------------------------------------------------------------------------------


class ShareForm(forms.Form):
    """The share of drafts (shadow) or of conversations (experiment) the adapter gets."""

    share = forms.DecimalField(
        min_value=Decimal("0"),
        max_value=Decimal("1"),
        max_digits=5,
        decimal_places=4,
        help_text="Between 0 and 1, at most 4 decimals (0.1 = one in ten).",
    )


class ShadowForm(ShareForm):
    tier_position = forms.IntegerField(
        required=False,
        min_value=1,
        help_text="The policy's tier the adapter shadows (and, once promoted, serves). Blank: "
        "the lowest tier served by the model the adapter was trained from.",
    )


@dataclass(frozen=True)
class Action:
    """One decision on a run: its URL's name, its button, the stages it is offered in (the
    service checks again: these only decide which buttons show), its confirmation text."""

    key: str
    label: str
    stages: tuple[str, ...]
    question: str
    explanation: str
    form: type[forms.Form] | None = None

    @property
    def url(self) -> str:
        return f"admin:drafting_distillrun_{self.key.replace('-', '_')}"


CANDIDATE, SHADOW = DistillRun.Stage.CANDIDATE.value, DistillRun.Stage.SHADOW.value
PROMOTED = DistillRun.Stage.PROMOTED.value
ACTIONS = {
    action.key: action
    for action in (
        Action(
            "shadow-start",
            "Start shadow",
            (CANDIDATE, SHADOW),
            "Put this adapter in shadow?",
            "For the share of the policy's drafts given here, the adapter also answers the "
            "same prompt as the tier it shadows, after the draft is ready. Its answers are "
            "never shown and never change the learned scorer's labels; their cost is spent "
            "on the message, like exploration. Another adapter of the policy in shadow goes "
            "back to candidate.",
            ShadowForm,
        ),
        Action(
            "shadow-stop",
            "Stop shadow",
            (SHADOW,),
            "Take this adapter out of shadow?",
            "New drafts are no longer answered by the adapter in shadow; the answers so far "
            "stay, and so does the comparison.",
        ),
        Action(
            "experiment",
            "Try live in an experiment",
            (CANDIDATE, SHADOW, PROMOTED),
            "Try this adapter live in an experiment?",
            "For the share of the team's new conversations given here, drafts come from a "
            "copy of the policy whose tier is served by the adapter (shown to agents); the "
            "rest stay on the policy (the control). The results are on the experiments page.",
            ShareForm,
        ),
        Action(
            "promote",
            "Promote",
            (CANDIDATE, SHADOW),
            "Promote this adapter?",
            "The adapter serves the policy's tier from the next draft on, in place of the "
            "tier's model (kept: rollback puts it back). Recorded in the audit log.",
        ),
        Action(
            "rollback",
            "Roll back",
            (PROMOTED,),
            "Roll this adapter back?",
            "The tier gets back the model it had before the promotion, and the adapter is "
            "retired. Recorded in the audit log.",
        ),
    )
}


def _percent(share: Decimal) -> str:
    return f"{(share * 100).normalize():f} %"


def _decide(action: Action, run: DistillRun, data: dict[str, Any], user: User) -> str:
    """Carry out `action` through drafting.adapters; the success message."""
    if action.key == "shadow-start":
        run = adapters.adapter_shadow_start(
            run=run, share=data["share"], tier_position=data.get("tier_position"), user=user
        )
        return (
            f"Adapter v{run.version} is in shadow on tier {run.shadow_tier} for "
            f"{_percent(run.shadow_share)} of the policy's drafts."
        )
    if action.key == "shadow-stop":
        adapters.adapter_shadow_stop(run=run, user=user)
        return f"Adapter v{run.version} is out of shadow (a candidate again)."
    if action.key == "experiment":
        experiment = adapters.adapter_experiment_start(run=run, share=data["share"], user=user)
        return (
            f"Experiment {experiment.name!r} started: the adapter drafts for "
            f"{_percent(data['share'])} of the team's new conversations."
        )
    if action.key == "promote":
        tier = adapters.adapter_promote(run=run, user=user)
        return f"Adapter v{run.version} now serves tier {tier.position} of {run.policy.name}."
    tier = adapters.adapter_rollback(run=run, user=user)
    return (
        f"Adapter v{run.version} rolled back: tier {tier.position} is served by "
        f"{tier.endpoint.name} again."
    )


# --- The admin -----------------------------------------------------------------------------------


def _validation_loss(run: DistillRun) -> str:
    before, after = run.validation.get("loss_before"), run.validation.get("loss")
    if before is None and after is None:
        return "—"
    text = [f"{v:.3f}" if isinstance(v, int | float) else "—" for v in (before, after)]
    return f"{text[0]} → {text[1]}"


@admin.register(DistillRun)
class DistillRunAdmin(RecordAdmin, admin.ModelAdmin[DistillRun]):
    """Versions of the team's local-model adapter, read-only, with the candidate's page."""

    list_display = [
        "version",
        "team",
        "policy",
        "stage",
        "status",
        "n_train",
        "validation_loss",
        "rouge_l",
        "seconds",
        "device",
        "cost_usd",
        "created_at",
    ]
    list_display_links = ["version"]
    list_filter = ["team", "stage", "status"]
    list_select_related = ["team", "policy"]
    search_fields = ["adapter_name"]
    # Shown as tables and a chart on the page rather than as raw JSON.
    exclude = ["filters", "hyperparameters", "loss_curve", "validation"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in DistillRun._meta.fields if f.name not in self.exclude]

    @admin.display(description="validation loss (before → after)")
    def validation_loss(self, run: DistillRun) -> str:
        return _validation_loss(run)

    @admin.display(description="ROUGE-L (validation)")
    def rouge_l(self, run: DistillRun) -> str:
        value = run.validation.get("rouge_l")
        return f"{value:.3f}" if isinstance(value, int | float) else "—"

    @admin.display(description="seconds", ordering="machine_seconds")
    def seconds(self, run: DistillRun) -> str:
        return f"{run.machine_seconds:.0f}"

    def can_act(self, request: HttpRequest) -> bool:
        return isinstance(request.user, User) and request.user.has_perm(CHANGE_PERMISSION)

    def _run(self, request: HttpRequest, pk: int | str) -> DistillRun:
        run = get_object_or_404(
            DistillRun.objects.select_related(
                "team", "policy", "endpoint", "base_endpoint", "replaced_endpoint"
            ),
            pk=pk,
        )
        if not self.has_view_permission(request, run):
            raise PermissionDenied
        return run

    def get_urls(self) -> list[URLPattern]:
        return [
            *(
                path(
                    f"<int:pk>/{key}/",
                    self.admin_site.admin_view(self.action_view),
                    {"key": key},
                    name=action.url.removeprefix("admin:"),
                )
                for key, action in ACTIONS.items()
            ),
            *super().get_urls(),
        ]

    def action_view(self, request: HttpRequest, pk: int, key: str) -> HttpResponse:
        """A decision's confirmation page (GET) and the decision itself (POST)."""
        run = self._run(request, pk)
        if not self.can_act(request) or not isinstance(request.user, User):
            raise PermissionDenied
        action = ACTIONS[key]
        posted = request.method == "POST"
        form = None
        if action.form is not None:
            # The run's own share and tier are the shadow form's starting values.
            initial = {"share": run.shadow_share, "tier_position": run.shadow_tier}
            form = action.form(request.POST if posted else None, initial=initial)
        if posted and (form is None or form.is_valid()):
            data = form.cleaned_data if form is not None else {}
            try:
                done = _decide(action, run, data, request.user)
            except (ValueError, ValidationError) as exc:  # AdapterStageError is a ValueError
                text = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
                self.message_user(request, f"{action.label}: {text}", messages.ERROR)
            else:
                self.message_user(request, done, messages.SUCCESS)
            return redirect(reverse("admin:drafting_distillrun_change", args=[run.pk]))
        return confirm_page(
            request,
            model_admin=self,
            original=run,
            title=action.question,
            evidence_url=(
                reverse("admin:drafting_distillrun_change", args=[run.pk]) + "#shadow-comparison"
            ),
            evidence="See the candidate against the current model (the same drafts, "
            "95 % intervals)",
            paragraphs=[
                action.explanation,
                format_html(
                    "Adapter <strong>{}</strong> (v{}, {}) of policy {}, trained from {}.",
                    run.adapter_name,
                    run.version,
                    run.get_stage_display().lower(),
                    run.policy.name,
                    run.base_endpoint,
                ),
            ],
            submit=f"Yes, {action.label.lower()}",
            form=form,
        )

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        run = self._run(request, object_id) if str(object_id).isdigit() else None
        context = dict(extra_context or {})
        if run is not None:
            context.update(
                chart=loss_chart(run.loss_curve),
                comparison=compare_shadow(run=run),
                hyperparameters=sorted(run.hyperparameters.items()),
                validation_rows=sorted(run.validation.items()),
                filters=sorted(run.filters.items()),
                can_act=self.can_act(request),
                actions_available=[a for a in ACTIONS.values() if run.stage in a.stages],
            )
        return super().change_view(request, object_id, form_url, context)
