"""The agent console: queue, conversation, live draft panel, reply."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from csbot import selectors, services
from csbot.models import Conversation, Message, Team
from drafting import selectors as drafting_selectors
from drafting import services as drafting
from drafting.models import AgentAction, Intent
from drafting.services import ActionRejected


def agent_team(request: HttpRequest) -> Team:
    """The team whose conversations the signed-in agent works on (every console page, the
    draft stream and the composer scope by it); no agent profile: 403."""
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


class QueueFilterForm(forms.Form):
    """The queue's filters, from the URL (bookmarkable). Every field may be left out."""

    q = forms.CharField(required=False, max_length=200, strip=True, label="Search")
    waiting = forms.ChoiceField(
        required=False,
        label="Waiting",
        choices=[
            (selectors.Waiting.ANY, "Any time"),
            (selectors.Waiting.OVER_5_MIN, "Over 5 minutes"),
            (selectors.Waiting.OVER_1_HOUR, "Over 1 hour"),
        ],
    )
    draft = forms.ChoiceField(
        required=False,
        label="Draft",
        choices=[
            (selectors.DraftState.ANY, "Any"),
            (selectors.DraftState.READY, "Ready"),
            (selectors.DraftState.PENDING, "Being drafted"),
            (selectors.DraftState.FAILED, "Failed"),
            (selectors.DraftState.NONE, "No draft"),
        ],
    )
    intent = forms.ChoiceField(required=False, label="Intent")
    assigned = forms.ChoiceField(
        required=False,
        label="Assigned",
        choices=[
            (selectors.Assignment.ALL, "Anyone"),
            (selectors.Assignment.MINE, "Me"),
            (selectors.Assignment.UNASSIGNED, "Unassigned"),
        ],
    )

    def __init__(self, *args: object, intents: list[str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["intent"].choices = [("", "Any"), *((name, name) for name in intents)]  # type: ignore[attr-defined]


@login_required
@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    """The team's open conversations: searched, filtered and paged from the URL. The page
    polls itself (htmx, every 5 s) with the same filters and page; invalid filters get a 400
    with the form's errors, not a 500."""
    team = agent_team(request)
    form = QueueFilterForm(request.GET, intents=drafting_selectors.intent_names(team_id=team.pk))
    page = None
    status = 200
    if form.is_valid():
        data = form.cleaned_data
        conversations = selectors.conversation_queue(
            team=team,
            agent=request.user,  # type: ignore[arg-type]
            q=data["q"],
            waiting=selectors.Waiting(data["waiting"]),
            draft_state=selectors.DraftState(data["draft"]),
            intent=data["intent"],
            assignment=selectors.Assignment(data["assigned"]),
        )
        page = selectors.conversation_queue_page(
            conversations=conversations,
            page=request.GET.get("page"),
            per_page=settings.CONSOLE_QUEUE_PAGE_SIZE,
        )
    else:
        status = 400
    # The filters as a query string without the page, for the pager's links.
    filters = request.GET.copy()
    filters.pop("page", None)
    context = {
        "form": form,
        "page": page,
        "filters": filters.urlencode(),
        "filtered": any(v for k, v in request.GET.items() if k != "page"),
    }
    partial = request.htmx and not request.htmx.history_restore_request  # type: ignore[attr-defined]
    template = "console/_queue_rows.html" if partial else "console/queue.html"
    return render(request, template, context, status=status)


def _claim_context(claim: services.Claim | None) -> dict[str, object]:
    return {
        "claim": claim,
        "claim_holder_name": (
            selectors.agent_display_name(claim.holder)
            if claim is not None and claim.holder is not None
            else ""
        ),
        # The open page renews its claim three times a lease, so one lost request is harmless.
        "claim_renew_seconds": max(settings.CONSOLE_CLAIM_SECONDS // 3, 1),
    }


@login_required
@require_GET
def conversation(request: HttpRequest, pk: int) -> HttpResponse:
    """A conversation's page. Opening an open conversation claims it for the agent unless
    another agent holds it: then the page says so and the reply stays locked until the agent
    takes it over."""
    thread = selectors.conversation_thread(team=agent_team(request), conversation_id=pk)
    context = _draft_context(request, thread)
    claim = None
    if thread.conversation.status == Conversation.Status.OPEN:
        claim = services.conversation_claim(
            conversation=thread.conversation,
            agent=request.user,  # type: ignore[arg-type]
        )
    context.update(_claim_context(claim))
    context["customer_history"] = selectors.customer_history(conversation=thread.conversation)
    context["max_chars"] = settings.CSBOT_MAX_MESSAGE_CHARS
    return render(request, "console/conversation.html", context)


@login_required
@require_POST
def claim(request: HttpRequest, pk: int) -> HttpResponse:
    """The open page's renewal (htmx, every third of a lease): claims the conversation again
    if it is free or the agent's; the claim banner, which shows who holds it now."""
    conversation = get_object_or_404(Conversation, pk=pk, team=agent_team(request))
    current = (
        services.conversation_claim(conversation=conversation, agent=request.user)  # type: ignore[arg-type]
        if conversation.status == Conversation.Status.OPEN
        else None
    )
    context = {"conversation": conversation, **_claim_context(current)}
    return render(request, "console/_claim.html", context)


@login_required
@require_POST
def take_over(request: HttpRequest, pk: int) -> HttpResponse:
    """Take a conversation another agent holds (explicitly: a button; audit-logged)."""
    conversation = get_object_or_404(Conversation, pk=pk, team=agent_team(request))
    taken = services.conversation_take_over(conversation=conversation, agent=request.user)  # type: ignore[arg-type]
    if taken.mine:
        flash.success(request, "You have taken over this conversation.")
    else:
        flash.error(request, "This conversation is closed: there is nothing to take over.")
    return redirect("console:conversation", pk=pk)


@login_required
@require_POST
def release(request: HttpRequest, pk: int) -> HttpResponse:
    """Give the conversation back to the queue (the agent's own claim only)."""
    conversation = get_object_or_404(Conversation, pk=pk, team=agent_team(request))
    services.conversation_release(conversation=conversation, agent=request.user)  # type: ignore[arg-type]
    flash.success(request, "Released: the conversation is back in the queue for anyone.")
    return redirect("console:queue")


@login_required
@require_GET
def draft_panel(request: HttpRequest, pk: int) -> HttpResponse:
    """The live part of the conversation page, polled by htmx until the draft settles."""
    thread = selectors.conversation_thread(team=agent_team(request), conversation_id=pk)
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
    team = agent_team(request)
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
    agent: User = request.user  # type: ignore[assignment]
    # The reply goes out under the agent's claim: taken (or renewed) now, atomically, unless
    # another agent holds the conversation; then nothing is sent until the agent takes it over.
    held = services.conversation_claim(conversation=conversation, agent=agent)
    if held.taken:
        until = timezone.localtime(held.until).strftime("%H:%M") if held.until else ""
        flash.error(
            request,
            f"Taken by {selectors.agent_display_name(held.holder)} until {until}: your reply "  # type: ignore[arg-type]
            "was not sent. Take the conversation over to answer it.",
        )
        return redirect("console:conversation", pk=pk)
    try:
        sent = services.reply_send(
            conversation=conversation,
            agent=agent,
            text=data["text"],
            inbound_message=inbound,
            draft=draft,
            kind=data["kind"],
        )
    except (ActionRejected, services.ConversationClosed) as exc:
        flash.error(request, str(exc))
        return redirect("console:conversation", pk=pk)
    if not sent.created:
        # A repeat or someone else's earlier answer: nothing was sent, so nothing to hold.
        services.conversation_release(conversation=conversation, agent=agent)
    if not sent.created and sent.message.text != data["text"]:
        # Two agents had the same conversation open and the other one answered first: the
        # customer gets one reply, and this agent must know theirs was not sent.
        flash.warning(
            request,
            f"{sent.message.author or 'Another agent'} had already answered this message: "
            "your reply was not sent.",
        )
        return redirect("console:conversation", pk=pk)
    next_conversation = selectors.next_conversation_for(team=team, agent=agent, after=pk)
    if next_conversation is not None:
        return redirect("console:conversation", pk=next_conversation)
    return redirect(reverse("console:queue"))


@login_required
@require_POST
def close(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = get_object_or_404(Conversation, pk=pk, team=agent_team(request))
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
    team = agent_team(request)
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
        team_id=agent_team(request).pk, article_id=pk, published_only=False
    )
    if found is None:
        raise Http404("No such article.")
    return render(request, "console/article.html", {"article": found})


@login_required
@require_GET
def insert_search(request: HttpRequest, pk: int) -> HttpResponse:
    """The picker's results: the team's active macros and published articles matching `q`."""
    team = agent_team(request)
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
    team = agent_team(request)
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
    team = agent_team(request)
    get_object_or_404(Conversation, pk=pk, team=team)
    found = drafting_selectors.team_article(team_id=team.pk, article_id=article_id)
    if found is None:
        raise Http404("No such article.")
    text = f"{found.title}: {found.source_url}" if found.source_url else found.title
    return HttpResponse(text, content_type="text/plain; charset=utf-8")
