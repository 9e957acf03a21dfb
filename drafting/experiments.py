"""Policy experiments: a randomised, sticky comparison of cascade policies within one team.

A running experiment sends each conversation opened after it started to one arm, drawn by a
seeded hash of the conversation's id: sha256("<seed>:<conversation id>") read as a number in
[0, 1), and the arm is the first (in position order) whose cumulative share exceeds it. The
draw needs no stored state, so every draft of a conversation lands in the same arm, on every
process, and an experiment can be re-analysed from its seed alone. Conversations opened before
the start keep the team's active policy (a conversation never switches policy because an
experiment began in its middle); after the stop, new drafts go back to the active policy.

Stopping keeps the results; promoting makes the winning arm's policy the team's one active
policy. Every change is in the audit log under the user who made it (and, for stop and promote,
in the experiment's admin history). The results are accounting's (accounting.experiments).
"""

from __future__ import annotations

import contextvars
import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import TypeVar

from auditlog.context import set_actor
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from csbot.memo import Memo
from csbot.models import Conversation, Team
from drafting.models import CascadePolicy, Experiment, ExperimentArm

# What a caller passes per arm: (name, policy, share of the conversations).
ArmSpec = tuple[str, CascadePolicy, Decimal]

# Seeds are stored in a PositiveIntegerField (PostgreSQL integer).
MAX_SEED = 2**31 - 1
SHARE_PLACES = Decimal("0.0001")
T = TypeVar("T")


# --- Assignment (pure) --------------------------------------------------------------------------


def assignment_point(seed: int, conversation_id: int) -> Fraction:
    """The conversation's uniform draw in [0, 1): the first 8 bytes of
    sha256("<seed>:<conversation id>") over 2**64, exact (no float rounding at the edges)."""
    digest = hashlib.sha256(f"{seed}:{conversation_id}".encode()).digest()
    return Fraction(int.from_bytes(digest[:8], "big"), 2**64)


def arm_index(seed: int, conversation_id: int, shares: Sequence[Decimal]) -> int:
    """Index (in position order) of the arm whose cumulative share first exceeds the draw; the
    last arm takes what rounding leaves, so every draw has an arm."""
    point = assignment_point(seed, conversation_id)
    cumulative = Fraction(0)
    for index, share in enumerate(shares):
        cumulative += Fraction(share)
        if point < cumulative:
            return index
    return len(shares) - 1


def arm_for(experiment: Experiment, conversation_id: int) -> ExperimentArm:
    """The experiment's arm for a conversation: pure and deterministic (seed, id, shares)."""
    arms = sorted(experiment.arms.all(), key=lambda arm: arm.position)
    if not arms:
        raise ValidationError(f"Experiment {experiment} has no arms.")
    return arms[arm_index(experiment.seed, conversation_id, [arm.share for arm in arms])]


# --- The running experiment, on the path of every inbound message -----------------------------


@dataclass(frozen=True)
class Running:
    """A team's running experiment as draft_request needs it (arms with their policies)."""

    experiment_id: int
    seed: int
    started_at: datetime
    arms: tuple[ExperimentArm, ...]  # position order, `policy` loaded

    def arm(self, conversation_id: int) -> ExperimentArm:
        return self.arms[arm_index(self.seed, conversation_id, [a.share for a in self.arms])]


# Read on every inbound message, changed when an admin starts or stops an experiment: kept a
# few seconds per process like the active policy (csbot.memo).
_running: Memo[int, Running | None] = Memo(depends_on=(Experiment, ExperimentArm, CascadePolicy))


def _load_running(team_id: int) -> Running | None:
    arms = list(
        ExperimentArm.objects.filter(
            experiment__team_id=team_id, experiment__status=Experiment.Status.RUNNING
        )
        .select_related("experiment", "policy")
        .order_by("position")
    )
    if not arms:
        return None
    experiment = arms[0].experiment
    return Running(
        experiment_id=experiment.pk,
        seed=experiment.seed,
        started_at=experiment.started_at,
        arms=tuple(arms),
    )


def conversation_arm(*, conversation: Conversation) -> ExperimentArm | None:
    """The arm whose policy drafts for this conversation, or None (no running experiment, or
    the conversation was opened before it started). The arm is shared: read it, never change
    it."""
    running = _running.get(conversation.team_id, lambda: _load_running(conversation.team_id))
    if running is None or conversation.created_at < running.started_at:
        return None
    return running.arm(conversation.pk)


# --- Start, stop, promote -----------------------------------------------------------------------


def _validated_arms(
    team: Team, arms: Sequence[ArmSpec]
) -> list[tuple[str, CascadePolicy, Decimal]]:
    if len(arms) < 2:
        raise ValidationError({"arms": "An experiment needs at least two arms."})
    errors: list[str] = []
    names: set[str] = set()
    cleaned = []
    for name, policy, share in arms:
        name = name.strip()
        if not name:
            errors.append("Every arm needs a name.")
        elif name in names:
            errors.append(f"Two arms are named {name!r}.")
        names.add(name)
        if policy.team_id != team.pk:
            errors.append(f"Policy {policy.name!r} is not a policy of team {team.name}.")
        share = Decimal(share)
        if share != share.quantize(SHARE_PLACES) or not Decimal(0) < share <= Decimal(1):
            errors.append(f"Arm {name!r}: a share is above 0, at most 1, with 4 decimals.")
        cleaned.append((name, policy, share))
    total = sum((share for _n, _p, share in cleaned), Decimal(0))
    if total != Decimal(1):
        errors.append(f"The arms' shares add up to {total}, not 1.")
    if errors:
        raise ValidationError({"arms": errors})
    return cleaned


def _in_audit_context(user: User, flow: Callable[[], T]) -> T:
    """Run `flow` in one transaction with `user` as the audit log's actor, in a copy of the
    context: a request's own audit context is left as it was (as drafting.learning.tuning
    does)."""

    def run() -> T:
        with set_actor(user), transaction.atomic():
            return flow()

    return contextvars.copy_context().run(run)


def experiment_start(
    *,
    team: Team,
    name: str,
    arms: Sequence[ArmSpec],
    seed: int | None = None,
    note: str = "",
    user: User,
) -> Experiment:
    """Start an experiment on the team's new conversations. ValidationError (field "arms",
    "name", "seed" or "team") when there are fewer than two arms, the shares do not add up
    to 1, a policy is another team's, the name is taken, or an experiment already runs."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "An experiment needs a name."})
    cleaned = _validated_arms(team, arms)
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
    elif not 0 <= seed <= MAX_SEED:
        raise ValidationError({"seed": f"A seed is between 0 and {MAX_SEED}."})

    def create() -> Experiment:
        running = Experiment.objects.filter(team=team, status=Experiment.Status.RUNNING).first()
        if running is not None:
            raise ValidationError(
                {"team": f"Experiment {running.name!r} is running: stop it before starting one."}
            )
        if Experiment.objects.filter(team=team, name=name).exists():
            raise ValidationError({"name": f"Team {team.name} already has an experiment {name!r}."})
        experiment = Experiment.objects.create(
            team=team,
            name=name,
            seed=seed,
            note=note,
            created_by=user,
        )
        for position, (arm_name, policy, share) in enumerate(cleaned):
            ExperimentArm.objects.create(
                experiment=experiment, name=arm_name, position=position, policy=policy, share=share
            )
        return experiment

    try:
        experiment = _in_audit_context(user, create)
    except IntegrityError as exc:  # another admin started one at the same moment
        raise ValidationError(
            {"team": "An experiment was started for this team meanwhile."}
        ) from exc
    return experiment


def _history(experiment: Experiment, user: User, message: str) -> None:
    LogEntry.objects.log_actions(
        user_id=user.pk,
        queryset=[experiment],
        action_flag=CHANGE,
        change_message=message,
        single_object=True,
    )


def experiment_stop(*, experiment: Experiment, user: User) -> Experiment:
    """Stop a running experiment: its conversations' next drafts use the team's active policy;
    the results stay. ValidationError when it is not running."""

    def stop() -> Experiment:
        locked = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if locked.status != Experiment.Status.RUNNING:
            raise ValidationError(f"Experiment {locked.name!r} is not running ({locked.status}).")
        locked.status = Experiment.Status.STOPPED
        locked.stopped_at = timezone.now()
        locked.save(update_fields=["status", "stopped_at"])
        _history(locked, user, "Stopped.")
        return locked

    stopped = _in_audit_context(user, stop)
    experiment.status, experiment.stopped_at = stopped.status, stopped.stopped_at
    return stopped


def experiment_promote(*, experiment: Experiment, arm: ExperimentArm, user: User) -> Experiment:
    """Make `arm`'s policy the team's one active policy and close the experiment as promoted
    (stopping it first when it runs). ValidationError when the arm is another experiment's or
    a winner was already promoted."""
    if arm.experiment_id != experiment.pk:
        raise ValidationError({"arm": f"Arm {arm.name!r} is not an arm of {experiment.name!r}."})

    def promote() -> Experiment:
        locked = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if locked.status == Experiment.Status.PROMOTED:
            raise ValidationError(f"Experiment {locked.name!r} already promoted a winner.")
        winner = CascadePolicy.objects.select_for_update().get(pk=arm.policy_id)
        # One active policy per team (a unique constraint, checked at once): the old one goes
        # off before the winner goes on. Saved one by one so that the audit log sees each
        # change and every process forgets the cached active policy.
        for active in CascadePolicy.objects.select_for_update().filter(
            team_id=locked.team_id, active=True
        ):
            if active.pk != winner.pk:
                active.active = False
                active.save(update_fields=["active"])
        if not winner.active:
            winner.active = True
            winner.save(update_fields=["active"])
        locked.status = Experiment.Status.PROMOTED
        locked.stopped_at = locked.stopped_at or timezone.now()
        locked.winner = arm
        locked.save(update_fields=["status", "stopped_at", "winner"])
        _history(locked, user, f"Promoted arm {arm.name!r}: policy {winner.name!r} is active.")
        return locked

    promoted = _in_audit_context(user, promote)
    experiment.status, experiment.stopped_at = promoted.status, promoted.stopped_at
    experiment.winner = arm
    return promoted
