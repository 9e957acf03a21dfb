"""The console's queue for a real team: search, filters, pages, live polls; the claim a
conversation's page takes (two agents, expiry, renewal, take-over, release, a real race);
the customer's earlier conversations."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from auditlog.models import LogEntry
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from csbot import selectors, services
from csbot.models import Conversation, Message
from csbot.selectors import Assignment, DraftState, Waiting
from drafting.models import Draft, Intent, MessageIntent
from tests.factories import (
    AgentProfileFactory,
    ConversationFactory,
    DraftFactory,
    MessageFactory,
    TeamSetup,
)


def waiting(
    setup: TeamSetup,
    text: str = "Where is my parcel?",
    *,
    customer: str = "Dana",
    minutes: float = 1,
    draft: str | None = None,
    external_id: str | None = None,
) -> Conversation:
    """An open conversation of the team waiting `minutes` for a reply to `text`, its newest
    message having a draft in state `draft` (None: no draft)."""
    since = timezone.now() - timedelta(minutes=minutes)
    extra = {"external_id": external_id} if external_id else {}
    conversation = ConversationFactory.create(
        channel=setup.channel, customer_ref=customer, awaiting_reply_since=since, **extra
    )
    message = MessageFactory.create(conversation=conversation, text=text, created_at=since)
    if draft is not None:
        ready = {"text": "Here it is.", "ready_at": since} if draft == Draft.Status.READY else {}
        DraftFactory.create(message=message, policy=setup.policy, status=draft, **ready)
    return conversation


def queue(setup: TeamSetup, **filters: Any) -> list[Conversation]:
    return list(selectors.conversation_queue(team=setup.team, agent=setup.agent, **filters))


def reply_form(conversation: Conversation, text: str) -> dict[str, Any]:
    """The console's reply form for the conversation's (only) message and its draft."""
    inbound = conversation.messages.get()
    draft = Draft.objects.get(message=inbound)
    return {"text": text, "kind": "ignore", "inbound_message_id": inbound.pk, "draft_id": draft.pk}


def second_agent(setup: TeamSetup, name: str = "Bo") -> Any:
    return AgentProfileFactory.create(team=setup.team, user__first_name=name).user


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- Search and filters -----------------------------------------------------------------------


def test_search_finds_customer_conversation_id_and_any_message_text(acme: TeamSetup) -> None:
    by_customer = waiting(acme, customer="Zoe Quartz")
    by_id = waiting(acme, external_id="ticket-77731")
    by_text = waiting(acme, "My blender arrived broken")
    MessageFactory.create(conversation=by_text, text="A later message about something else")
    waiting(acme, "Nothing to see")

    assert queue(acme, q="quartz") == [by_customer]
    assert queue(acme, q="77731") == [by_id]
    assert queue(acme, q="BLENDER") == [by_text]  # an older message of the thread, any case
    assert queue(acme, q="no such words") == []


def test_search_never_shows_another_teams_conversations(
    client: Client, acme: TeamSetup, globex: TeamSetup
) -> None:
    ours = waiting(acme, "Refund for order 5512")
    waiting(globex, "Refund for order 5512, theirs")
    assert queue(acme, q="5512") == [ours]
    body = client_for(acme.agent).get("/console/", {"q": "5512"}).content.decode()
    assert "theirs" not in body and f"/console/c/{ours.pk}" in body


def test_waiting_filter_keeps_those_waiting_longer_than_the_chosen_time(acme: TeamSetup) -> None:
    fresh = waiting(acme, minutes=1)
    ten_minutes = waiting(acme, minutes=10)
    two_hours = waiting(acme, minutes=120)
    answered = waiting(acme)
    Conversation.objects.filter(pk=answered.pk).update(awaiting_reply_since=None)

    assert set(queue(acme, waiting=Waiting.OVER_5_MIN)) == {ten_minutes, two_hours}
    assert queue(acme, waiting=Waiting.OVER_1_HOUR) == [two_hours]
    # Default order: waiting longest first, answered ones last.
    assert queue(acme) == [two_hours, ten_minutes, fresh, answered]


def test_draft_state_filter_groups_queued_and_generating_and_counts_held_out_as_none(
    acme: TeamSetup,
) -> None:
    ready = waiting(acme, draft=Draft.Status.READY)
    queued = waiting(acme, draft=Draft.Status.QUEUED)
    generating = waiting(acme, draft=Draft.Status.GENERATING)
    failed = waiting(acme, draft=Draft.Status.FAILED)
    held_out = waiting(acme, draft=Draft.Status.HELD_OUT)
    no_draft = waiting(acme)
    # A superseded draft is not the conversation's draft.
    superseded = waiting(acme, draft=Draft.Status.SUPERSEDED)

    assert queue(acme, draft_state=DraftState.READY) == [ready]
    assert set(queue(acme, draft_state=DraftState.PENDING)) == {queued, generating}
    assert queue(acme, draft_state=DraftState.FAILED) == [failed]
    assert set(queue(acme, draft_state=DraftState.NONE)) == {held_out, no_draft, superseded}


def test_intent_filter_reads_the_newest_customer_message_only(acme: TeamSetup) -> None:
    billing = Intent.objects.create(team=acme.team, name="billing")
    shipping = Intent.objects.create(team=acme.team, name="shipping")
    now_billing = waiting(acme, "Charged twice")
    MessageIntent.objects.create(
        message=now_billing.messages.get(), intent=billing, confidence="0.9"
    )
    was_billing = waiting(acme, "Charged twice")
    MessageIntent.objects.create(
        message=was_billing.messages.get(), intent=billing, confidence="0.9"
    )
    newer = MessageFactory.create(conversation=was_billing, text="Also, where is my parcel?")
    MessageIntent.objects.create(message=newer, intent=shipping, confidence="0.8")
    waiting(acme, "No verdict yet")

    assert queue(acme, intent="billing") == [now_billing]
    assert queue(acme, intent="shipping") == [was_billing]
    assert queue(acme, intent="billing")[0].intent_name == "billing"  # type: ignore[attr-defined]


def test_assignment_filter_counts_an_expired_claim_as_unassigned(acme: TeamSetup) -> None:
    other = second_agent(acme)
    now = timezone.now()
    mine = waiting(acme)
    theirs = waiting(acme)
    expired = waiting(acme)
    free = waiting(acme)
    services.conversation_claim(conversation=mine, agent=acme.agent)
    services.conversation_claim(conversation=theirs, agent=other)
    Conversation.objects.filter(pk=expired.pk).update(
        assigned_to=other, assigned_until=now - timedelta(seconds=1)
    )

    assert queue(acme, assignment=Assignment.MINE) == [mine]
    assert set(queue(acme, assignment=Assignment.UNASSIGNED)) == {expired, free}
    assert len(queue(acme, assignment=Assignment.ALL)) == 4


def test_conversations_another_agent_holds_come_after_the_ones_free_to_take(
    acme: TeamSetup,
) -> None:
    other = second_agent(acme)
    oldest = waiting(acme, minutes=30)
    middle = waiting(acme, minutes=20)
    newest = waiting(acme, minutes=10)
    services.conversation_claim(conversation=oldest, agent=other)
    services.conversation_claim(conversation=newest, agent=acme.agent)

    assert queue(acme) == [middle, newest, oldest]
    # The other agent sees it the other way round.
    assert list(selectors.conversation_queue(team=acme.team, agent=other)) == [
        oldest,
        middle,
        newest,
    ]


# --- The page: filters in the URL, pages, polls, bad input, query count -------------------------


def test_the_queue_page_pages_with_its_filters_in_the_links(
    client: Client, acme: TeamSetup, settings: Any
) -> None:
    settings.CONSOLE_QUEUE_PAGE_SIZE = 5
    for n in range(12):
        waiting(acme, f"Parcel question {n}", minutes=100 - n)
    waiting(acme, "Something else entirely")
    client = client_for(acme.agent)

    first = client.get("/console/", {"q": "parcel"}).content.decode()
    assert "12 conversations match" in first
    assert "page 1 of 3" in first
    assert first.count('<tr data-href="/console/c/') == 5
    assert 'href="?q=parcel&amp;page=2"' in first

    last = client.get("/console/", {"q": "parcel", "page": "3"}).content.decode()
    assert last.count('<tr data-href="/console/c/') == 2
    assert "Parcel question 11" in last and "Parcel question 0" not in last
    # A page past the end (a bookmark of a queue that shrank) shows the last one, no error.
    beyond = client.get("/console/", {"q": "parcel", "page": "99"})
    assert beyond.status_code == 200
    assert "page 3 of 3" in beyond.content.decode()


def test_the_poll_answers_the_rows_for_the_same_filters_and_page(
    client: Client, acme: TeamSetup, settings: Any
) -> None:
    settings.CONSOLE_QUEUE_PAGE_SIZE = 5
    for n in range(7):
        waiting(acme, f"Refund {n}", minutes=100 - n, draft=Draft.Status.READY)
    waiting(acme, "Refund, no draft yet")
    page = client_for(acme.agent).get("/console/", {"draft": "ready", "page": "2"})
    body = page.content.decode()
    assert 'hx-include="#queue-filters, #queue-page"' in body
    assert 'id="queue-page" name="page" value="2"' in body

    poll = client_for(acme.agent).get(
        "/console/", {"draft": "ready", "page": "2"}, HTTP_HX_REQUEST="true"
    )
    fragment = poll.content.decode()
    assert "<html" not in fragment
    assert "Refund 5" in fragment and "Refund 6" in fragment
    assert "Refund 0" not in fragment and "no draft yet" not in fragment
    assert 'data-total="7"' in fragment


@pytest.mark.parametrize(
    ("param", "value"),
    [("waiting", "forever"), ("draft", "maybe"), ("assigned", "boss"), ("intent", "nope")],
)
def test_an_invalid_filter_is_a_400_that_says_what_is_wrong(
    client: Client, acme: TeamSetup, param: str, value: str
) -> None:
    waiting(acme, "A question")
    response = client_for(acme.agent).get("/console/", {param: value})
    assert response.status_code == 400
    body = response.content.decode()
    assert "These filters are not valid" in body
    assert f"{value} is not one of the available choices" in body
    assert "A question" not in body


def test_the_filtered_queue_runs_the_same_queries_whatever_the_number_of_conversations(
    client: Client, acme: TeamSetup
) -> None:
    other = second_agent(acme)
    client = client_for(acme.agent)
    filters = {"q": "parcel", "waiting": "5m", "draft": "ready", "assigned": "unassigned"}

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/console/", filters).status_code == 200
        return len(queries)

    waiting(acme, "parcel 0", minutes=10, draft=Draft.Status.READY)
    few = count()
    for n in range(1, 25):
        held = waiting(acme, f"parcel {n}", minutes=10 + n, draft=Draft.Status.READY)
        if n % 3 == 0:
            services.conversation_claim(conversation=held, agent=other)
    assert count() == few


# --- Claims -----------------------------------------------------------------------------------


def test_opening_claims_and_a_second_agent_sees_it_taken(acme: TeamSetup) -> None:
    conversation = waiting(acme)
    ada, bo = acme.agent, second_agent(acme, name="Bo")
    ada.first_name = "Ada"
    ada.save(update_fields=["first_name"])

    mine = client_for(ada).get(f"/console/c/{conversation.pk}").content.decode()
    assert "You hold this conversation until" in mine
    conversation.refresh_from_db()
    assert conversation.assigned_to == ada
    assert conversation.assigned_until is not None
    until = timezone.localtime(conversation.assigned_until).strftime("%H:%M")

    theirs = client_for(bo).get(f"/console/c/{conversation.pk}").content.decode()
    assert "Taken by Ada</strong> until <time" in theirs
    assert f">{until}</time>" in theirs
    assert 'id="take-over"' in theirs
    conversation.refresh_from_db()
    assert conversation.assigned_to == ada  # looking did not take it
    queue_row = client_for(bo).get("/console/").content.decode()
    assert 'class="badge held"' in queue_row and ">Ada</span>" in queue_row
    own_row = client_for(ada).get("/console/").content.decode()
    assert '<span class="badge mine">you</span>' in own_row


def test_an_expired_claim_goes_to_the_next_agent_who_opens_it(acme: TeamSetup) -> None:
    conversation = waiting(acme)
    bo = second_agent(acme)
    services.conversation_claim(conversation=conversation, agent=acme.agent)
    later = timezone.now() + timedelta(seconds=301)

    claim = services.conversation_claim(conversation=conversation, agent=bo, now=later)

    assert claim.mine and not claim.taken
    conversation.refresh_from_db()
    assert conversation.assigned_to == bo
    assert conversation.assigned_until == later + timedelta(seconds=300)


def test_the_open_page_renews_its_claim_and_learns_of_a_take_over(acme: TeamSetup) -> None:
    conversation = waiting(acme)
    ada, bo = client_for(acme.agent), client_for(second_agent(acme))
    ada.get(f"/console/c/{conversation.pk}")
    Conversation.objects.filter(pk=conversation.pk).update(
        assigned_until=timezone.now() + timedelta(seconds=5)
    )

    renewed = ada.post(f"/console/c/{conversation.pk}/claim")
    assert renewed.status_code == 200
    assert 'data-state="mine"' in renewed.content.decode()
    conversation.refresh_from_db()
    assert conversation.assigned_until is not None
    assert conversation.assigned_until > timezone.now() + timedelta(seconds=290)

    # Bo's renewal does not take it; after Bo's take-over, Ada's renewal shows it taken.
    assert 'data-state="taken"' in bo.post(f"/console/c/{conversation.pk}/claim").content.decode()
    bo.post(f"/console/c/{conversation.pk}/take-over")
    assert 'data-state="taken"' in ada.post(f"/console/c/{conversation.pk}/claim").content.decode()


def test_taking_over_is_explicit_and_audit_logged(acme: TeamSetup) -> None:
    conversation = waiting(acme)
    bo = second_agent(acme)
    client_for(acme.agent).get(f"/console/c/{conversation.pk}")

    response = client_for(bo).post(f"/console/c/{conversation.pk}/take-over")

    assert response.status_code == 302
    assert response["Location"] == f"/console/c/{conversation.pk}"
    conversation.refresh_from_db()
    assert conversation.assigned_to == bo
    entry = LogEntry.objects.get(object_pk=str(conversation.pk), actor=bo)
    assert entry.changes == {"assigned_to": [acme.agent.username, bo.username]}
    # Taking a free conversation is a plain claim: nothing to log.
    free = waiting(acme)
    client_for(bo).post(f"/console/c/{free.pk}/take-over")
    assert not LogEntry.objects.filter(object_pk=str(free.pk)).exists()


def test_a_reply_under_another_agents_claim_is_not_sent(acme: TeamSetup) -> None:
    conversation = waiting(acme, draft=Draft.Status.READY)
    bo = client_for(second_agent(acme))
    client_for(acme.agent).get(f"/console/c/{conversation.pk}")
    form = reply_form(conversation, "Bo's answer")

    refused = bo.post(f"/console/c/{conversation.pk}/reply", form)

    assert refused["Location"] == f"/console/c/{conversation.pk}"
    assert not Message.objects.filter(conversation=conversation, direction="out").exists()
    page = bo.get(refused["Location"]).content.decode()
    assert "your reply was not sent. Take the conversation over to answer it." in page
    # After taking it over, the same reply goes out.
    bo.post(f"/console/c/{conversation.pk}/take-over")
    bo.post(f"/console/c/{conversation.pk}/reply", form)
    assert Message.objects.get(conversation=conversation, direction="out").text == "Bo's answer"


def test_sending_a_reply_releases_the_claim_and_opens_the_next_free_conversation(
    acme: TeamSetup,
) -> None:
    answered = waiting(acme, minutes=50, draft=Draft.Status.READY)
    held = waiting(acme, minutes=40)
    free = waiting(acme, minutes=30)
    services.conversation_claim(conversation=held, agent=second_agent(acme))
    client = client_for(acme.agent)
    client.get(f"/console/c/{answered.pk}")

    response = client.post(f"/console/c/{answered.pk}/reply", reply_form(answered, "Sorted"))

    answered.refresh_from_db()
    assert answered.assigned_to is None and answered.assigned_until is None
    assert response["Location"] == f"/console/c/{free.pk}"  # not the older one Bo holds


def test_release_gives_back_only_the_agents_own_claim(acme: TeamSetup) -> None:
    conversation = waiting(acme)
    bo = client_for(second_agent(acme))
    client_for(acme.agent).get(f"/console/c/{conversation.pk}")

    assert bo.post(f"/console/c/{conversation.pk}/release").status_code == 302
    conversation.refresh_from_db()
    assert conversation.assigned_to == acme.agent

    client_for(acme.agent).post(f"/console/c/{conversation.pk}/release")
    conversation.refresh_from_db()
    assert conversation.assigned_to is None


def test_closing_drops_the_claim_and_a_closed_conversation_is_not_claimed(
    acme: TeamSetup,
) -> None:
    conversation = waiting(acme)
    client = client_for(acme.agent)
    client.get(f"/console/c/{conversation.pk}")
    client.post(f"/console/c/{conversation.pk}/close")
    conversation.refresh_from_db()
    assert conversation.assigned_to is None
    page = client.get(f"/console/c/{conversation.pk}").content.decode()
    assert 'id="claim"' not in page
    conversation.refresh_from_db()
    assert conversation.assigned_to is None


@pytest.mark.django_db(transaction=True)
def test_two_agents_claiming_at_the_same_moment_one_wins(acme: TeamSetup) -> None:
    """Real PostgreSQL, two threads on their own connections, released together: the
    conditional UPDATE lets exactly one of them have the conversation."""
    conversation = waiting(acme)
    agents = [acme.agent, second_agent(acme)]
    start = threading.Barrier(len(agents))

    def claim(agent: Any) -> services.Claim:
        try:
            start.wait(timeout=10)
            return services.conversation_claim(conversation=conversation, agent=agent)
        finally:
            connections.close_all()  # this thread's own connection

    with ThreadPoolExecutor(max_workers=len(agents)) as pool:
        for _ in range(20):  # many rounds: a lost update would show up in one of them
            Conversation.objects.filter(pk=conversation.pk).update(
                assigned_to=None, assigned_until=None
            )
            results = list(pool.map(claim, agents, timeout=30))  # re-raises a thread's error
            winners = [r for r in results if r.mine]
            assert len(winners) == 1, results
            assert winners[0].holder is not None
            loser = next(r for r in results if not r.mine)
            assert loser.taken and loser.holder is not None
            assert loser.holder.pk == winners[0].holder.pk
            conversation.refresh_from_db()
            assert conversation.assigned_to_id == winners[0].holder.pk


# --- The customer's panel ---------------------------------------------------------------------


def test_the_customer_panel_lists_their_other_conversations_newest_first(
    client: Client, acme: TeamSetup, globex: TeamSetup
) -> None:
    now = timezone.now()
    current = waiting(acme, customer="Dana")
    older = ConversationFactory.create(
        channel=acme.channel,
        customer_ref="Dana",
        status=Conversation.Status.CLOSED,
        updated_at=now - timedelta(days=9),
    )
    MessageFactory.create(conversation=older, text="Thanks, that solved it")
    newer = ConversationFactory.create(
        channel=acme.channel, customer_ref="Dana", updated_at=now - timedelta(days=2)
    )
    waiting(acme, customer="Someone else")
    ConversationFactory.create(channel=globex.channel, customer_ref="Dana")

    history = selectors.customer_history(conversation=current)
    assert history.conversations == [newer, older]
    assert history.total == 2
    page = client_for(acme.agent).get(f"/console/c/{current.pk}").content.decode()
    assert "Earlier conversations with Dana" in page
    assert "Thanks, that solved it" in page
    assert page.index(f"/console/c/{newer.pk}") < page.index(f"/console/c/{older.pk}")


def test_the_customer_panel_shows_ten_with_the_count(acme: TeamSetup) -> None:
    current = waiting(acme, customer="Dana")
    for _ in range(12):
        ConversationFactory.create(channel=acme.channel, customer_ref="Dana")
    history = selectors.customer_history(conversation=current)
    assert len(history.conversations) == 10
    assert history.total == 12
    page = client_for(acme.agent).get(f"/console/c/{current.pk}").content.decode()
    assert "12 in all, the 10 newest shown" in page
