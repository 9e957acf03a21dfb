"""The three-way split of the learned scorer's P(good) into P(use), P(edit), P(ignore).

The scorer predicts one probability, P(good = used, or edited within
SCORER_GOOD_EDIT_PERCENT), Platt-calibrated on out-of-fold predictions (drafting.learning.plr).
Withholding needs the three actions, since each is worth a different S_a. The split
(drafting.engine.decisions.ActionSplit) is fitted on the same labelled drafts the scorer is
trained on, when it is trained, and stored with the version (TrainedClassifier.metrics
["action_split"]): the share of good drafts that were used as is, and the share of bad drafts
that were edited (heavily) rather than ignored, each a Beta(1, 1)-smoothed frequency, so that
tens of labels give a sensible split and none gives ½.

Why not a multinomial model on the score: the labels' scores would be the new model's own
in-sample scores (overconfident), and the score's information is already in P(good); what is
left is how a policy's agents split within good and within bad, which frequencies estimate
without any fitting (docs/decisions.md).
"""

from __future__ import annotations

from django.db.models import Q

from drafting.engine.decisions import ActionSplit
from drafting.engine.edits import is_good_edit
from drafting.models import AgentAction

# A uniform prior on each share: (n + 1) / (N + 2).
PRIOR = 1


def action_split_fit(*, policy_id: int, limit: int) -> ActionSplit:
    """The split from the policy's newest `limit` labelled drafts (the scorer's labels: actions
    use, edit or ignore on a draft with text). One query."""
    rows = list(
        AgentAction.objects.filter(
            draft__policy_id=policy_id,
            kind__in=[AgentAction.Kind.USE, AgentAction.Kind.EDIT, AgentAction.Kind.IGNORE],
        )
        .exclude(Q(draft__text=""))
        .order_by("-acted_at", "-id")
        .values_list("kind", "edit_distance")[:limit]
    )
    used = light = heavy = ignored = 0
    for kind, distance in rows:
        if kind == AgentAction.Kind.USE:
            used += 1
        elif kind == AgentAction.Kind.IGNORE:
            ignored += 1
        elif is_good_edit(distance):
            light += 1
        else:
            heavy += 1
    good, bad = used + light, heavy + ignored
    return ActionSplit(
        use_given_good=(used + PRIOR) / (good + 2 * PRIOR),
        edit_given_bad=(heavy + PRIOR) / (bad + 2 * PRIOR),
        n_good=good,
        n_bad=bad,
    )
