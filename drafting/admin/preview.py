"""Admin page "Try a question": what a team's policy would draft for a question, grounded in
its knowledge base and, beside it, without — with the sources the draft cites and what each
answer cost. Nothing is stored (drafting.services.draft_preview); every try asks the models,
so it costs what a draft costs, twice.

The page hangs off the cascade policies' admin (/admin/drafting/cascadepolicy/try/: the
policy is what is tried); the admin site admits csbot's admins only (csbot.admin_site).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from csbot.models import Team
from drafting import services
from drafting.models import CascadePolicy

# What an earlier turn's line starts with, and who said it.
SPEAKERS = {"customer:": "customer", "agent:": "agent"}


def earlier_turns(text: str) -> list[dict[str, str]]:
    """Turns typed one a line, each starting "Customer:" or "Agent:" (a line without either
    continues the turn above). ValueError for text before the first speaker."""
    turns: list[dict[str, str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        speaker = next((s for s in SPEAKERS if stripped.casefold().startswith(s)), None)
        if speaker is not None:
            turns.append({"role": SPEAKERS[speaker], "text": stripped[len(speaker) :].strip()})
        elif turns:
            turns[-1]["text"] += "\n" + stripped
        else:
            raise ValueError('Start each turn with "Customer:" or "Agent:".')
    return turns


class TryQuestionForm(forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.order_by("name"))
    policy = forms.ModelChoiceField(
        queryset=CascadePolicy.objects.select_related("team").order_by("team__name", "name"),
        required=False,
        help_text="Empty: the team's active policy.",
    )
    tier = forms.IntegerField(
        min_value=1,
        required=False,
        help_text="Only the tier at this position (1: the first, e.g. the local model); "
        "empty: the whole cascade.",
    )
    earlier = forms.CharField(
        label="Earlier turns",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        help_text='Optional, one turn a line: "Customer: …" or "Agent: …".',
    )
    question = forms.CharField(
        max_length=4000, widget=forms.Textarea(attrs={"rows": 3, "cols": 80})
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        team, policy = data.get("team"), data.get("policy")
        if team is not None and policy is not None and policy.team_id != team.pk:
            self.add_error("policy", f"{policy} is not a policy of {team}.")
        try:
            data["thread"] = [
                *earlier_turns(data.get("earlier") or ""),
                {"role": "customer", "text": (data.get("question") or "").strip()},
            ]
        except ValueError as exc:
            self.add_error("earlier", str(exc))
        return data


def try_question_urls(model_admin: admin.ModelAdmin[CascadePolicy]) -> list[URLPattern]:
    """The page's URL, for the cascade policies' admin to include in its own."""

    def view(request: HttpRequest) -> HttpResponse:
        return try_question(request, model_admin=model_admin)

    return [
        path(
            "try/",
            model_admin.admin_site.admin_view(view),
            name="drafting_cascadepolicy_try",
        )
    ]


def try_question(
    request: HttpRequest, *, model_admin: admin.ModelAdmin[CascadePolicy]
) -> HttpResponse:
    """GET: the form (team and policy may be given in the query string); POST: both previews."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    form = (
        TryQuestionForm(request.POST)
        if request.method == "POST"
        else TryQuestionForm(initial=request.GET.dict())  # the policy page's link fills these
    )
    grounded = ungrounded = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        policy: CascadePolicy | None = data["policy"]
        asked = {
            "team_id": data["team"].pk,
            "thread": data["thread"],
            "policy_id": policy.pk if policy is not None else None,
            "tier": data["tier"],
        }
        grounded = services.draft_preview(grounded=True, **asked)
        ungrounded = services.draft_preview(grounded=False, **asked)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": "Try a question",
        "form": form,
        "previews": (
            [("With the knowledge base", grounded), ("Without it", ungrounded)]
            if grounded is not None and ungrounded is not None
            else []
        ),
    }
    return TemplateResponse(request, "admin/drafting/cascadepolicy/try.html", context)
