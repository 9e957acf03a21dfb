"""Withholding drafts whose expected ENCS of showing is negative (drafting.decisions): the
decision when a draft is ready, and that a withheld draft never reaches the agent — console
page, queue, REST API, the live stream — nor is explored, cached or labelled as shown."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from drafting import services as drafting
from drafting import streaming
from drafting.engine.decisions import ActionSplit
from drafting.engine.providers import Completion
from drafting.engine.scoring import ScoringContext, Verdict
from drafting.learning.withholding import action_split_fit
from drafting.models import (
    ActionValues,
    AgentAction,
    CachedReply,
    CascadePolicy,
    Draft,
    TrainedClassifier,
)
from tests.drafting.factories import paid_endpoint
from tests.factories import (
    AgentActionFactory,
    DraftFactory,
    MessageFactory,
    PolicyFactory,
    TeamSetup,
    UserFactory,
    ingest,
    make_team,
    post_action,
)
from tests.http_stub import Reply, chat_completion, openai_stub

DRAFT = "I am not sure what happened to your parcel; maybe ask the courier, they might know."
SPLIT = ActionSplit(use_given_good=0.8, edit_given_bad=0.2)


@dataclass
class FixedScorer:
    """The learned scorer in force, as the engine sees it: a fixed P(good), its version's id."""

    p_good: float
    classifier_id: int | None

    def score(self, *, context: ScoringContext, completion: Completion) -> float:
        return self.p_good

    def judge(self, *, context: ScoringContext, completion: Completion) -> Verdict:
        return Verdict(self.p_good, scorer_id=self.classifier_id)

    def explain(self, **_: Any) -> None:
        return None


@dataclass
class Setup:
    team: TeamSetup
    scorer: FixedScorer
    published: list[tuple[str, str | None]]

    @property
    def policy(self) -> CascadePolicy:
        return self.team.policy


@pytest.fixture
def withholding(db: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    """A one-tier team whose policy withholds, with a learned scorer in force (its P(good)
    fixed by the test) and measured action values: S_use $0.90, S_edit $0.60, S_ignore −$0.30.
    The tier streams its answer; what the worker publishes is recorded."""
    published: list[tuple[str, str | None]] = []
    monkeypatch.setattr(
        streaming,
        "draft_stream_publish",
        lambda *, draft_id, event, seq=0, text=None: published.append((event, text)),
    )
    body = chat_completion(DRAFT, completion_tokens=20, logprob=-0.05)
    # Streamed when the worker asks for a stream (a policy that may withhold does not).
    with openai_stub(lambda request: Reply(body=body, stream=bool(request.get("stream")))) as stub:
        team = make_team("Withholding", endpoint=paid_endpoint(stub.base_url))
        CascadePolicy.objects.filter(pk=team.policy.pk).update(withhold_negative=True)
        team.policy.refresh_from_db()
        classifier = TrainedClassifier.objects.create(
            kind=TrainedClassifier.Kind.SCORER,
            policy=team.policy,
            version=1,
            active=True,
            embedding_model="stub",
            features="stub",
            penalty="l2",
            strength_c=1.0,
            n_train=80,
            metrics={"auc": 0.8, "action_split": SPLIT.as_json()},
            model_blob=b"",
        )
        ActionValues.objects.create(
            team=team.team,
            s_use=Decimal("0.90"),
            s_edit=Decimal("0.60"),
            s_ignore=Decimal("-0.30"),
            wait_per_second=Decimal("0.01"),
            n_actions=80,
        )
        scorer = FixedScorer(p_good=0.1, classifier_id=classifier.pk)
        monkeypatch.setattr(drafting, "policy_scorer", lambda *, policy_id: scorer)
        yield Setup(team=team, scorer=scorer, published=published)


def _generate(setup: Setup, conversation: str = "c1", *, draw: float = 0.5) -> Draft:
    draft = ingest(setup.team, conversation, f"{conversation}-m1", "Where is my parcel?").draft
    assert draft is not None
    drafting.draft_generate(draft_id=draft.pk, withhold_draw=lambda: draw)
    draft.refresh_from_db()
    return draft


def _value(p_good: float) -> Decimal:
    p = SPLIT.probabilities(p_good)
    return (
        Decimal(repr(p.use)) * Decimal("0.90")
        + Decimal(repr(p.edit)) * Decimal("0.60")
        + Decimal(repr(p.ignore)) * Decimal("-0.30")
    ).quantize(Decimal("0.0000000001"))


# --- The decision -------------------------------------------------------------------------------


def test_a_draft_worth_less_than_nothing_is_withheld_with_its_text_cost_and_estimate(
    withholding: Setup,
) -> None:
    draft = _generate(withholding)
    # P(good) 0.1: P(use) 0.08, P(edit) 0.02 + 0.18, P(ignore) 0.72 → V = 0.072 + 0.12 − 0.216
    assert _value(0.1) == Decimal("-0.0240000000")
    assert draft.status == Draft.Status.WITHHELD
    assert draft.text == DRAFT  # kept for the record
    assert draft.total_cost > 0
    assert draft.expected_encs == _value(0.1) - draft.total_cost
    assert draft.decision_probability == Decimal("0.9")
    assert draft.ready_at is not None
    assert draft.attempts.count() == 1


def test_a_negative_draft_drawn_into_the_show_share_is_shown_and_says_so(
    withholding: Setup,
) -> None:
    draft = _generate(withholding, draw=0.05)  # < the default share, 0.1
    assert draft.status == Draft.Status.READY
    assert draft.expected_encs == _value(0.1) - draft.total_cost
    assert draft.decision_probability == Decimal("0.1")


def test_a_draft_worth_showing_is_shown_with_probability_one(withholding: Setup) -> None:
    withholding.scorer.p_good = 0.6
    draft = _generate(withholding)
    assert draft.status == Draft.Status.READY
    assert draft.expected_encs == _value(0.6) - draft.total_cost
    assert draft.decision_probability == Decimal(1)


def test_withholding_is_off_by_default(db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert CascadePolicy().withhold_negative is False
    with openai_stub(Reply(body=chat_completion(DRAFT))) as stub:
        team = make_team("Default", endpoint=paid_endpoint(stub.base_url))
        ActionValues.objects.create(
            team=team.team,
            s_use=Decimal("0.9"),
            s_edit=Decimal("0.6"),
            s_ignore=Decimal("-0.3"),
            wait_per_second=Decimal("0.01"),
            n_actions=80,
        )
        draft = ingest(team, "c1", "c1-m1", "Where is my parcel?").draft
        assert draft is not None
        drafting.draft_generate(draft_id=draft.pk, withhold_draw=lambda: 0.99)
    draft.refresh_from_db()
    assert draft.status == Draft.Status.READY
    assert draft.expected_encs is None and draft.decision_probability is None


def test_nothing_is_withheld_without_action_values_or_a_learned_judgement(
    withholding: Setup,
) -> None:
    ActionValues.objects.all().delete()
    draft = _generate(withholding, "no-values")
    assert (draft.status, draft.expected_encs) == (Draft.Status.READY, None)
    ActionValues.objects.create(
        team=withholding.team.team,
        s_use=Decimal("0.9"),
        s_edit=Decimal("0.6"),
        s_ignore=Decimal("-0.3"),
        wait_per_second=Decimal("0.01"),
        n_actions=80,
    )
    # The default scorer judged (an embedding failure): no calibrated P(good), no decision.
    withholding.scorer.classifier_id = None
    draft = _generate(withholding, "default-judged")
    assert (draft.status, draft.expected_encs) == (Draft.Status.READY, None)


def test_the_split_is_fitted_from_the_policys_labelled_drafts(withholding: Setup) -> None:
    setup = withholding.team
    for kind, distance in [("use", "0"), ("use", "0"), ("edit", "0.1"), ("edit", "0.6")] + [
        ("ignore", None)
    ] * 3:
        draft = DraftFactory.create(
            message=MessageFactory.create(conversation__channel=setup.channel),
            policy=setup.policy,
            status=Draft.Status.READY,
            text="A draft",
            ready_at=timezone.now(),
        )
        AgentActionFactory.create(
            draft=draft,
            agent=setup.agent,
            kind=kind,
            edit_distance=None if distance is None else Decimal(distance),
            shown_at=draft.ready_at,
            acted_at=timezone.now(),
        )
    split = action_split_fit(policy_id=setup.policy.pk, limit=100)
    # Good: 2 used + 1 light edit → (2 + 1) / (3 + 2); bad: 1 heavy edit + 3 ignored → 2 / 6.
    assert split.use_given_good == pytest.approx(0.6)
    assert split.edit_given_bad == pytest.approx(1 / 3)
    assert (split.n_good, split.n_bad) == (3, 4)


# --- Never shown ----------------------------------------------------------------------------------


def test_a_policy_that_may_withhold_streams_no_text(withholding: Setup) -> None:
    _generate(withholding)
    assert [event for event, _ in withholding.published] == ["settled"]


def test_without_withholding_the_same_draft_is_streamed(withholding: Setup) -> None:
    CascadePolicy.objects.filter(pk=withholding.policy.pk).update(withhold_negative=False)
    draft = _generate(withholding)
    assert draft.status == Draft.Status.READY
    assert any(event == "text" for event, _ in withholding.published)


def test_the_console_shows_a_withheld_draft_as_no_draft(withholding: Setup) -> None:
    draft = _generate(withholding)
    client = Client()
    client.force_login(withholding.team.agent)
    conversation_id = draft.message.conversation_id
    page = client.get(reverse("console:conversation", args=[conversation_id]))
    panel = client.get(reverse("console:draft-panel", args=[conversation_id]))
    for response in (page, panel):
        assert response.status_code == 200
        assert DRAFT not in response.content.decode()
        assert "parcel; maybe ask" not in response.content.decode()
    assert "write the reply" in panel.content.decode()
    assert 'name="kind" id="kind" value="none"' in page.content.decode()
    queue = client.get(reverse("console:queue"), {"draft": "none"})
    assert f"/c/{conversation_id}" in queue.content.decode()
    ready = client.get(reverse("console:queue"), {"draft": "ready"})
    assert f"/c/{conversation_id}" not in ready.content.decode()


def test_the_api_gives_a_withheld_draft_without_its_text(withholding: Setup) -> None:
    draft = _generate(withholding)
    api = withholding.team.api()
    detail = api.get(f"/api/v1/drafts/{draft.pk}").json()
    assert (detail["status"], detail["text"]) == ("withheld", "")
    message = api.get(f"/api/v1/messages/{draft.message_id}").json()
    assert message["draft"]["status"] == "withheld"
    assert message["draft"]["text"] == ""
    listed = api.get(f"/api/v1/conversations/{draft.message.conversation_id}/messages").json()
    assert DRAFT not in str(listed)


def test_an_action_on_a_withheld_draft_is_an_unaided_reply(withholding: Setup) -> None:
    draft = _generate(withholding)
    api = withholding.team.api()
    agent = withholding.team.agent.username
    # "Use" would send the withheld text: there is none to send.
    refused = post_action(api, draft, kind="use", agent=agent, shown_at=timezone.now())
    assert refused.status_code == 400
    assert "final_text" in refused.json()
    sent = post_action(
        api,
        draft,
        kind="ignore",
        agent=agent,
        final_text="It ships on Friday.",
        shown_at=timezone.now(),
    )
    assert sent.status_code == 201, sent.content
    action = AgentAction.objects.get(draft=draft)
    assert (action.kind, action.edit_distance) == (AgentAction.Kind.NONE, None)
    assert action.outbound_message.text == "It ships on Friday."
    drafting.reply_remember(action_id=action.pk)
    assert not CachedReply.objects.exists()  # an unaided reply is no approved draft


def test_the_console_reply_to_a_withheld_draft_is_recorded_as_none(withholding: Setup) -> None:
    draft = _generate(withholding)
    client = Client()
    client.force_login(withholding.team.agent)
    conversation_id = draft.message.conversation_id
    client.get(reverse("console:conversation", args=[conversation_id]))
    client.post(
        reverse("console:reply", args=[conversation_id]),
        {
            "text": DRAFT,  # even the same words: the agent never saw the draft
            "kind": "use",
            "inbound_message_id": draft.message_id,
            "draft_id": draft.pk,
        },
    )
    action = AgentAction.objects.get(draft=draft)
    assert action.kind == AgentAction.Kind.NONE


def test_a_withheld_draft_is_never_explored(withholding: Setup) -> None:
    draft = _generate(withholding)
    assert drafting.draft_explore(draft_id=draft.pk) == 0
    assert draft.attempts.count() == 1


def test_the_policy_form_has_both_withholding_fields_with_their_help(db: None) -> None:
    policy = PolicyFactory.create()
    client = Client()
    client.force_login(UserFactory.create(is_superuser=True, is_staff=True))
    page = client.get(reverse("admin:drafting_cascadepolicy_change", args=[policy.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert 'name="withhold_negative"' in html and 'name="withhold_show_share"' in html
    assert "Share of would-be-withheld drafts still shown" in html
    policy.withhold_show_share = Decimal("1.5")
    with pytest.raises(ValidationError):
        policy.full_clean()
