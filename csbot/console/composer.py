"""The composer tools on the console's reply box: POST the agent's text and a tool, get the
rewritten text (JSON) for the browser to put in the box (csbot/static/csbot/composer.js).

The rewrite and its record are drafting's (`drafting.services.composer_rewrite`); this module
is the edge: the team's conversation (another team's: 404), the form (errors: 400 with field
errors), and the refusals and failures as statuses the script can tell apart — 409 when the
message has no draft to record the spend on, 503 when no tier can be asked now, 502 when the
model failed (the attempt is recorded; the agent's text is untouched).
"""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_POST

from csbot.console.views import agent_team
from csbot.models import Conversation, Message
from drafting import services as drafting
from drafting.models import DraftAttempt

# Every purpose but the draft's own and a shadow answer (a candidate adapter's, never shown).
TOOL_CHOICES = [
    (value, label)
    for value, label in DraftAttempt.Purpose.choices
    if value not in (DraftAttempt.Purpose.DRAFT, DraftAttempt.Purpose.SHADOW)
]

# What the status line says a tool did.
DONE = {
    "shorten": "Shortened",
    "friendlier": "Made friendlier",
    "formal": "Made more formal",
    "grammar": "Grammar fixed",
    "translate": "Translated",
}

# ComposerRefused.reason → the HTTP status the browser gets.
REFUSED_STATUS = {"invalid": 400, "no_draft": 409, "held_out": 409, "unavailable": 503}


class ComposeForm(forms.Form):
    tool = forms.ChoiceField(choices=TOOL_CHOICES)
    # Not stripped: the agent's line breaks and spacing are theirs until the tool changes them.
    text = forms.CharField(max_length=settings.CSBOT_MAX_MESSAGE_CHARS, strip=False)
    # The customer message the reply box answers (the page's); blank: the one pending now.
    message_id = forms.IntegerField(required=False)

    def clean_text(self) -> str:
        text: str = self.cleaned_data["text"].replace("\r\n", "\n").replace("\r", "\n")
        if not text.strip():
            raise forms.ValidationError("There is no text to rewrite.")
        return text


def usd(amount: Decimal) -> str:
    """A small amount of money with two significant digits ("$0.000021"), "$0" for nothing:
    a local rewrite costs millionths of a dollar, which cents would show as $0.00."""
    if amount == 0:
        return "$0"
    places = min(10, max(2, 1 - amount.adjusted()))
    return f"${amount:.{places}f}"


def _errors(form: forms.Form) -> dict[str, list[str]]:
    return {field: [str(e) for e in errors] for field, errors in form.errors.items()}


@login_required
@require_POST
def compose(request: HttpRequest, pk: int) -> JsonResponse:
    """Rewrite the reply box's text with a composer tool; JSON either way: `text`, `cost`,
    `status` (the line the page announces) or `error` (and `errors` per field)."""
    team = agent_team(request)
    conversation = get_object_or_404(Conversation, pk=pk, team=team)
    form = ComposeForm(request.POST)
    if not form.is_valid():
        return JsonResponse(
            {"error": "The rewrite request is not valid.", "errors": _errors(form)}, status=400
        )
    data = form.cleaned_data
    inbound = conversation.messages.filter(direction=Message.Direction.INBOUND)
    if data["message_id"] is not None:
        message = get_object_or_404(inbound, pk=data["message_id"])
    else:
        newest = inbound.order_by("-id").first()
        if newest is None:
            raise Http404("This conversation has no customer message.")
        message = newest
    try:
        result = drafting.composer_rewrite(
            team=team,
            message_id=message.pk,
            tool=data["tool"],
            text=data["text"],
            user=request.user,
        )
    except drafting.ComposerRefused as refused:
        body: dict[str, object] = {"error": str(refused)}
        if refused.field:
            body["errors"] = {refused.field: [str(refused)]}
        return JsonResponse(body, status=REFUSED_STATUS.get(refused.reason, 400))
    where = "local" if result.endpoint_kind == "local" else result.endpoint
    if result.tiers_asked > 1:
        # A cheaper tier could not do it: the agent paid for it too, so say so.
        where += (
            f" after {result.tiers_asked - 1} cheaper tier{'s' if result.tiers_asked > 2 else ''}"
        )
    body = {
        "tool": data["tool"],
        "attempt_id": result.attempt_id,
        "cost": str(result.cost),
        "tier": result.tier,
        "endpoint": result.endpoint,
        "latency_ms": result.latency_ms,
        "tiers_asked": result.tiers_asked,
    }
    if result.error:
        # The model failed, or its answer could not be used: 502, the text stays the agent's.
        return JsonResponse(
            {**body, "error": f"{result.error} ({usd(result.cost)} · {where})"}, status=502
        )
    done = DONE.get(data["tool"], "Rewritten")
    if result.language:
        done += f" into {result.language}"
    return JsonResponse(
        {**body, "text": result.text, "status": f"{done} · {usd(result.cost)} · {where}"}
    )
