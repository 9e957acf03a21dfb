"""The agent console: queue, conversation, live draft panel, reply."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from csbot import selectors, services
from csbot.models import Conversation, Message, Team
from drafting import selectors as drafting_selectors
from drafting import services as drafting
from drafting.models import AgentAction, Intent
from drafting.services import ActionRejected


def _team(request: HttpRequest) -> Team:
    profile = getattr(request.user, "agent_profile", None)
    if profile is None:
        raise PermissionDenied("Your account is not an agent of any team.")
    return profile.team


def _agent_name(request: HttpRequest) -> str:
    return selectors.agent_display_name(request.user)  # type: ignore[arg-type]


def _draft_context(request: HttpRequest, thread: selectors.Thread) -> dict[str, object]:
    """The draft panel's context: the draft, its text as this agent sees it ({agent_name}
    filled), why earlier tiers were escalated, and what the draft is grounded in."""
    draft = thread.draft
    if draft is not None:
        drafting.draft_mark_shown(draft=draft)
    draft_text = (
        drafting_selectors.draft_text_for_agent(text=draft.text, agent_name=_agent_name(request))
        if draft is not None
        else ""
    )
    return {
        "thread": thread,
        "draft": draft,
        "draft_text": draft_text,
        "escalations": drafting_selectors.draft_escalations(draft=draft),
        "sources": drafting_selectors.draft_sources(draft=draft, shown_text=draft_text),
    }


@login_required
@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    conversations = selectors.conversation_queue(team=_team(request))[:200]
    template = "console/_queue_rows.html" if request.htmx else "console/queue.html"  # type: ignore[attr-defined]
    return render(request, template, {"conversations": conversations})


@login_required
@require_GET
def conversation(request: HttpRequest, pk: int) -> HttpResponse:
    thread = selectors.conversation_thread(team=_team(request), conversation_id=pk)
    context = _draft_context(request, thread)
    context["max_chars"] = settings.CSBOT_MAX_MESSAGE_CHARS
    return render(request, "console/conversation.html", context)


@login_required
@require_GET
def draft_panel(request: HttpRequest, pk: int) -> HttpResponse:
    """The live part of the conversation page, polled by htmx until the draft settles."""
    thread = selectors.conversation_thread(team=_team(request), conversation_id=pk)
    return render(request, "console/_draft_panel.html", _draft_context(request, thread))


class ReplyForm(forms.Form):
    text = forms.CharField(max_length=settings.CSBOT_MAX_MESSAGE_CHARS, strip=True)
    kind = forms.ChoiceField(choices=AgentAction.Kind.choices)
    inbound_message_id = forms.IntegerField(required=False)
    draft_id = forms.IntegerField(required=False)

    def clean_text(self) -> str:
        # Browsers submit a textarea's line breaks as CRLF. Store them as LF, as the draft has
        # them: otherwise an accepted multi-line draft is no longer "as is" and is rejected.
        text: str = self.cleaned_data["text"]
        return text.replace("\r\n", "\n").replace("\r", "\n")


@login_required
@require_POST
def reply(request: HttpRequest, pk: int) -> HttpResponse:
    team = _team(request)
    conversation = get_object_or_404(Conversation, pk=pk, team=team)
    form = ReplyForm(request.POST)
    if not form.is_valid():
        for field, errors in form.errors.items():
            flash.error(request, f"{field}: {' '.join(str(e) for e in errors)}")
        return redirect("console:conversation", pk=pk)
    data = form.cleaned_data
    inbound = None
    draft = None
    if data["inbound_message_id"]:
        inbound = get_object_or_404(
            Message,
            pk=data["inbound_message_id"],
            conversation=conversation,
            direction=Message.Direction.INBOUND,
        )
    if data["draft_id"] and inbound is not None:
        # The draft the agent saw, even if the customer has written again since.
        draft = drafting_selectors.draft_of_message(
            draft_id=data["draft_id"], message_id=inbound.pk
        )
        if draft is None:
            raise Http404("No such draft for this message.")
    try:
        sent = services.reply_send(
            conversation=conversation,
            agent=request.user,  # type: ignore[arg-type]
            text=data["text"],
            inbound_message=inbound,
            draft=draft,
            kind=data["kind"],
        )
    except (ActionRejected, services.ConversationClosed) as exc:
        flash.error(request, str(exc))
        return redirect("console:conversation", pk=pk)
    if not sent.created and sent.message.text != data["text"]:
        # Two agents had the same conversation open and the other one answered first: the
        # customer gets one reply, and this agent must know theirs was not sent.
        flash.warning(
            request,
            f"{sent.message.author or 'Another agent'} had already answered this message: "
            "your reply was not sent.",
        )
        return redirect("console:conversation", pk=pk)
    next_conversation = (
        selectors.conversation_queue(team=team)
        .filter(awaiting_reply_since__isnull=False)
        .exclude(pk=pk)
        .values_list("pk", flat=True)
        .first()
    )
    if next_conversation is not None:
        return redirect("console:conversation", pk=next_conversation)
    return redirect(reverse("console:queue"))


@login_required
@require_POST
def close(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = get_object_or_404(Conversation, pk=pk, team=_team(request))
    services.conversation_close(conversation=conversation)
    flash.success(request, "Conversation closed; it reopens if the customer writes again.")
    return redirect("console:queue")


# --- Intent labelling -------------------------------------------------------------------------


class IntentLabelForm(forms.Form):
    message_id = forms.IntegerField()
    intent_id = forms.IntegerField()


def _newest_inbound(conversation: Conversation) -> Message | None:
    return conversation.messages.filter(direction=Message.Direction.INBOUND).order_by("-id").first()


@login_required
@require_http_methods(["GET", "POST"])
def intent(request: HttpRequest, pk: int) -> HttpResponse:
    """The intent box of a conversation's newest customer message (loaded by htmx after the
    page, so the page's own queries stay as they are): GET shows the verdict; POST labels a
    customer message of this conversation with one of the team's intents."""
    team = _team(request)
    conversation = get_object_or_404(Conversation, pk=pk, team=team)
    if request.method == "POST":
        form = IntentLabelForm(request.POST)
        if not form.is_valid():
            raise Http404("No such message or intent.")
        message = get_object_or_404(
            Message,
            pk=form.cleaned_data["message_id"],
            conversation=conversation,
            direction=Message.Direction.INBOUND,
        )
        label = get_object_or_404(Intent, pk=form.cleaned_data["intent_id"], team=team)
        drafting.message_intent_label(message=message, intent=label, user=request.user)
        if not request.htmx:  # type: ignore[attr-defined]
            flash.success(request, f"Labelled as {label.name}.")
            return redirect("console:conversation", pk=pk)
    panel = drafting_selectors.intent_panel(team=team, message=_newest_inbound(conversation))
    return render(
        request, "console/_intent.html", {"intent_panel": panel, "conversation": conversation}
    )


# --- Knowledge: articles a draft cites, macros and article links to insert --------------------


@login_required
@require_GET
def article(request: HttpRequest, pk: int) -> HttpResponse:
    """One of the team's articles, read-only: where a source without a public URL links to
    (an unpublished one too: a draft may have cited it before). Another team's: 404."""
    found = drafting_selectors.team_article(
        team_id=_team(request).pk, article_id=pk, published_only=False
    )
    if found is None:
        raise Http404("No such article.")
    return render(request, "console/article.html", {"article": found})


@login_required
@require_GET
def insert_search(request: HttpRequest, pk: int) -> HttpResponse:
    """The picker's results: the team's active macros and published articles matching `q`."""
    team = _team(request)
    conversation = get_object_or_404(Conversation, pk=pk, team=team)
    q = request.GET.get("q", "")[:200]
    return render(
        request,
        "console/_insert_results.html",
        {
            "conversation": conversation,
            "q": q,
            "macros": drafting_selectors.macros_for_team(team_id=team.pk, q=q),
            "articles": drafting_selectors.articles_for_team(team_id=team.pk, q=q),
        },
    )


@login_required
@require_GET
def insert_macro(request: HttpRequest, pk: int, macro_id: int) -> HttpResponse:
    """A macro's body with the placeholders this conversation and agent fill, as plain text
    for the reply box. Another team's (or an inactive) macro: 404."""
    team = _team(request)
    conversation = get_object_or_404(Conversation, pk=pk, team=team)
    macro = drafting_selectors.team_macro(team_id=team.pk, macro_id=macro_id)
    if macro is None:
        raise Http404("No such macro.")
    text = drafting_selectors.macro_text_for(
        macro=macro, customer_ref=conversation.customer_ref, agent_name=_agent_name(request)
    )
    return HttpResponse(text, content_type="text/plain; charset=utf-8")


@login_required
@require_GET
def insert_article(request: HttpRequest, pk: int, article_id: int) -> HttpResponse:
    """A published article of the team as "Title: URL", plain text for the reply box (the
    title alone when it has no public URL: the console's own page is not for customers).
    Another team's or an unpublished article: 404."""
    team = _team(request)
    get_object_or_404(Conversation, pk=pk, team=team)
    found = drafting_selectors.team_article(team_id=team.pk, article_id=article_id)
    if found is None:
        raise Http404("No such article.")
    text = f"{found.title}: {found.source_url}" if found.source_url else found.title
    return HttpResponse(text, content_type="text/plain; charset=utf-8")
