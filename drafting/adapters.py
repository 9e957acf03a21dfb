"""A trained adapter's life after training: published, tried in shadow, promoted, rolled back.

A `DistillRun` that succeeded holds a LoRA adapter folder (drafting.learning.distill). This
module turns it into something the cascade can ask and an admin can decide on:

- publish: a LOCAL `ModelEndpoint` whose model name is the adapter's (vLLM serves a LoRA
  adapter under its own model name beside the base model), with the base endpoint's URL,
  limits and prices, and the adapter loaded into the running server. A server that is down is
  no error: `adapters_serving` names the published adapters, and `manage.py local_llm serve`
  starts the server with them (`--lora-modules`);
- shadow: for a share of the policy's drafts, once the draft is ready and shown, the adapter
  answers the same prompt as the tier it shadows (`draft_shadow`): one attempt of purpose
  SHADOW, exploratory, never shown, its cost spent on the message like exploration's;
- promote: the shadowed tier's endpoint becomes the adapter's (the tier's endpoint before is
  kept on the run), and rollback puts it back; both in one transaction under the admin's name
  in the audit log;
- an experiment: the adapter live for a share of conversations, through drafting.experiments,
  with a copy of the policy whose shadowed tier is the adapter.

Service-level (drafting's public face, like drafting.experiments): views, admin actions, tasks
and commands call these functions; the stage rules live here and nowhere else.
"""

from __future__ import annotations

import contextvars
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from auditlog.context import set_actor
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from csbot.locks import advisory_lock
from csbot.memo import Memo
from drafting import experiments, localserver, services
from drafting.models import (
    CascadePolicy,
    CascadeTier,
    DistillRun,
    Draft,
    DraftAttempt,
    EndpointPrice,
    Experiment,
    IntentRule,
    ModelEndpoint,
)
from drafting.signals import attempts_added

logger = logging.getLogger(__name__)
T = TypeVar("T")

SHARE_PLACES = Decimal("0.0001")


class AdapterStageError(ValueError):
    """The run is not in a stage (or status) that allows what was asked."""


# --- Publish ------------------------------------------------------------------------------------


def _endpoint_name(run: DistillRun) -> str:
    # The adapter's name is unique across teams; the policy and version say what it is.
    return f"{run.policy.name} adapter v{run.version} ({run.adapter_name})"[:120]


def _api_key(endpoint: ModelEndpoint) -> str | None:
    return os.environ.get(endpoint.api_key_env) or None if endpoint.api_key_env else None


def _load(run: DistillRun, endpoint: ModelEndpoint) -> bool:
    """Load the adapter into the endpoint's server; False (logged) when the server cannot
    take it now: it is loaded when the server (re)starts (`adapters_serving`)."""
    try:
        localserver.load_adapter(
            endpoint.resolved_base_url(),
            name=run.adapter_name,
            path=run.adapter_path,
            api_key=_api_key(endpoint),
        )
    except (localserver.LocalLLMError, ValueError) as error:
        logger.warning(
            "adapter %s: not loaded into %s now (%s); the server serves it when it starts",
            run.adapter_name,
            endpoint.name,
            error,
        )
        return False
    return True


def adapter_publish(*, run: DistillRun) -> ModelEndpoint:
    """The endpoint serving the run's adapter, made on the first call (idempotent).

    Steps: only a succeeded run with an adapter folder (AdapterStageError otherwise); in one
    transaction, with the run locked: its endpoint if it has one, else a LOCAL endpoint named
    after the policy and version whose model is the adapter's name, with the base endpoint's
    URL, API key variable, timeout, output and prompt limits, and the base's price rows in
    force now and later (an adapter costs what its base costs: the same server, the same
    machine time), then `run.endpoint` set; after commit, load the adapter into the server
    (a server that is down or has no LoRA is logged, not an error)."""
    with transaction.atomic():
        locked = DistillRun.objects.select_for_update().get(pk=run.pk)
        if locked.status != DistillRun.Status.SUCCEEDED:
            raise AdapterStageError(
                f"Adapter v{locked.version} has not trained successfully ({locked.status}): "
                "there is nothing to serve."
            )
        if not locked.adapter_path:
            raise AdapterStageError(f"Adapter v{locked.version} has no adapter folder.")
        endpoint = locked.endpoint
        if endpoint is None:
            base = locked.base_endpoint
            endpoint = ModelEndpoint.objects.create(
                name=_endpoint_name(locked),
                kind=ModelEndpoint.Kind.LOCAL,
                base_url=base.base_url,
                model_name=locked.adapter_name,
                api_key_env=base.api_key_env,
                timeout_seconds=base.timeout_seconds,
                max_output_tokens=base.max_output_tokens,
                prompt_token_budget=base.prompt_token_budget,
                enabled=True,
            )
            _copy_prices(base, endpoint)
            locked.endpoint = endpoint
            locked.save(update_fields=["endpoint"])
    run.endpoint = endpoint
    _load(locked, endpoint)
    return endpoint


def _copy_prices(base: ModelEndpoint, endpoint: ModelEndpoint) -> None:
    """The base's price row in force now and any scheduled after it, copied as they are."""
    now = timezone.now()
    current = base.prices.filter(effective_from__lte=now).order_by("-effective_from").first()
    later = base.prices.filter(effective_from__gt=now).order_by("effective_from")
    for price in [*([current] if current is not None else []), *later]:
        EndpointPrice.objects.create(
            endpoint=endpoint,
            effective_from=price.effective_from,
            input_price_per_mtok=price.input_price_per_mtok,
            output_price_per_mtok=price.output_price_per_mtok,
            request_fee=price.request_fee,
            gpu_hour_usd=price.gpu_hour_usd,
            note=f"priced like its base ({base.name})"[:200],
        )


def adapters_serving(*, base_url: str | None = None) -> dict[str, str]:
    """Adapter name -> folder of every published adapter that is not retired (those at
    `base_url` only, when given): what a (re)started local server must serve. A folder that
    is gone is left out (logged): vLLM would refuse to start with it."""
    runs = (
        DistillRun.objects.filter(
            status=DistillRun.Status.SUCCEEDED, endpoint__isnull=False, adapter_path__gt=""
        )
        .exclude(stage=DistillRun.Stage.RETIRED)
        .select_related("endpoint")
        .order_by("pk")
    )
    wanted = base_url.rstrip("/") if base_url else None
    serving: dict[str, str] = {}
    for run in runs:
        assert run.endpoint is not None
        if wanted is not None and run.endpoint.resolved_base_url().rstrip("/") != wanted:
            continue
        if not Path(run.adapter_path).is_dir():
            logger.warning("adapter %s: folder %s is gone", run.adapter_name, run.adapter_path)
            continue
        serving[run.adapter_name] = run.adapter_path
    return serving


# --- Serving merged -----------------------------------------------------------------------------


def _url_port(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:
        return None


def _merged_runs() -> QuerySet[DistillRun]:
    return (
        DistillRun.objects.filter(
            serving=DistillRun.Serving.MERGED,
            status=DistillRun.Status.SUCCEEDED,
            endpoint__isnull=False,
        )
        .exclude(stage=DistillRun.Stage.RETIRED)
        .select_related("endpoint")
        .order_by("pk")
    )


def _merged_port(run: DistillRun) -> int:
    """The run's port when it is served merged already, else the lowest from
    DISTILL_MERGED_PORT that no other merged adapter holds."""
    taken: dict[int, int] = {}
    for other in _merged_runs():
        assert other.endpoint is not None
        port = _url_port(other.endpoint.resolved_base_url())
        if port is not None:
            taken[port] = other.pk
    for port, run_id in taken.items():
        if run_id == run.pk:
            return port
    port = settings.DISTILL_MERGED_PORT
    while port in taken or port in (settings.LOCAL_LLM_PORT, settings.LOCAL_EMBED_PORT):
        port += 1
    return port


def merged_serving() -> list[localserver.MergedModel]:
    """The servers the merged adapters need (not retired, folder present): what `manage.py
    local_llm serve` starts beside the base."""
    serving: list[localserver.MergedModel] = []
    for run in _merged_runs():
        assert run.endpoint is not None
        port = _url_port(run.endpoint.resolved_base_url())
        folder = Path(run.merged_path)
        if port is None or not (folder / "config.json").is_file():
            logger.warning("adapter %s: merged folder %s is gone", run.adapter_name, folder)
            continue
        serving.append(localserver.MergedModel(port=port, name=run.adapter_name, folder=folder))
    return serving


def adapter_serve_merged(
    *,
    run: DistillRun,
    user: User | None,
    progress: Callable[[str], None] | None = None,
    timeout: float = 600,
) -> ModelEndpoint:
    """Serve the adapter merged into the base's weights, on a vLLM server of its own: on a
    CPU, LoRA beside the base doubles each decoding step, a merged copy costs what the base
    costs (docs/distillation.md). Its endpoint (the same row: tiers, shadow and experiments
    that name it follow) then points at that server.

    Steps: only a trained adapter that is not retired, for the shipped local model, with no
    LOCAL_LLM_URL (a model served elsewhere, e.g. on a GPU, is started there); publish if
    needed; merge into `<adapter folder>-merged` unless done (peft merge_and_unload, ≈10 s
    here); start its server on the run's port (≈75 s; a running one is reused) and wait until
    it answers under the adapter's name; only then, in one audited transaction, point the
    endpoint there and mark the run merged, so drafts never go to a server that is not up.
    Minutes long: a command (`manage.py distill_serve`), never a web request."""
    from drafting.learning.distill import merge_adapter  # torch and peft: not in web processes

    say = progress or (lambda _message: None)
    if settings.LOCAL_LLM_URL:
        raise AdapterStageError(
            "LOCAL_LLM_URL is set: the local model is served elsewhere (on a GPU an adapter "
            "costs little beside the base); serve a merged copy there with vLLM's --model."
        )
    if run.status != DistillRun.Status.SUCCEEDED or run.stage == DistillRun.Stage.RETIRED:
        raise AdapterStageError(f"Adapter v{run.version} cannot be served ({run.stage}).")
    base_dir = localserver.config.model_dir()
    if run.base_model != base_dir.name:
        raise AdapterStageError(
            f"Adapter v{run.version} fine-tunes {run.base_model}, not the shipped {base_dir.name}."
        )
    endpoint = adapter_publish(run=run)
    adapter_dir = Path(run.adapter_path)
    folder = adapter_dir.with_name(f"{adapter_dir.name}-merged")
    if not (folder / "config.json").is_file():
        say(f"merging adapter v{run.version} into {base_dir.name}'s weights: {folder}")
        merge_adapter(base_dir=base_dir, adapter_dir=adapter_dir, out_dir=folder)
    port = _merged_port(run)
    url = localserver.ensure_server(
        port=port,
        timeout=timeout,
        progress=say,
        model=folder,
        served_model_name=run.adapter_name,
    )

    def switch() -> ModelEndpoint:
        locked = DistillRun.objects.select_for_update().get(pk=run.pk)
        served = ModelEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        served.base_url = url
        served.save(update_fields=["base_url"])
        locked.serving = DistillRun.Serving.MERGED
        locked.merged_path = str(folder)
        locked.save(update_fields=["serving", "merged_path"])
        return served

    served = _in_audit_context(user, switch)
    run.refresh_from_db()
    say(f"adapter v{run.version} served merged at {url} as {run.adapter_name}")
    return served


def adapter_serve_lora(*, run: DistillRun, user: User | None) -> ModelEndpoint:
    """Back to LoRA beside the base: the endpoint points at the base's server again (audited),
    the adapter is loaded there, and the merged server is stopped (its folder is kept, so
    serving merged again skips the merge). AdapterStageError unless served merged."""

    def switch() -> tuple[ModelEndpoint, int | None]:
        locked = DistillRun.objects.select_for_update().get(pk=run.pk)
        if locked.serving != DistillRun.Serving.MERGED or locked.endpoint_id is None:
            raise AdapterStageError(f"Adapter v{locked.version} is not served merged.")
        served = ModelEndpoint.objects.select_for_update().get(pk=locked.endpoint_id)
        port = _url_port(served.resolved_base_url())
        served.base_url = locked.base_endpoint.base_url
        served.save(update_fields=["base_url"])
        locked.serving = DistillRun.Serving.LORA
        locked.save(update_fields=["serving"])
        return served, port

    served, port = _in_audit_context(user, switch)
    run.refresh_from_db()
    _load(run, served)
    if port is not None:
        localserver.stop_server(port)
    return served


# --- Stages -------------------------------------------------------------------------------------


def _in_audit_context(user: User | None, flow: Callable[[], T]) -> T:
    """Run `flow` in one transaction with `user` as the audit log's actor, in a copy of the
    context (a request's own audit context is left as it was)."""

    def run() -> T:
        with set_actor(user), transaction.atomic():
            return flow()

    return contextvars.copy_context().run(run)


def _share(share: Decimal) -> Decimal:
    share = Decimal(share)
    if share != share.quantize(SHARE_PLACES) or not Decimal(0) < share <= Decimal(1):
        raise ValueError(f"A share is above 0, at most 1, with 4 decimals (got {share}).")
    return share


def _tier(run: DistillRun, position: int | None = None) -> CascadeTier:
    """The policy's tier the adapter stands in for: `position` (or the run's shadow tier),
    else the lowest tier served by the run's base endpoint, or by a promoted adapter of the
    same base (a newer adapter replaces it); locked when in a transaction."""
    tiers = CascadeTier.objects.select_for_update().filter(policy_id=run.policy_id)
    position = position if position is not None else run.shadow_tier
    if position is not None:
        tier = tiers.filter(position=position).first()
        if tier is None:
            raise AdapterStageError(f"Policy {run.policy.name!r} has no tier {position}.")
        return tier
    promoted = DistillRun.objects.filter(
        policy_id=run.policy_id,
        base_endpoint_id=run.base_endpoint_id,
        stage=DistillRun.Stage.PROMOTED,
        endpoint__isnull=False,
    ).values("endpoint_id")
    tier = (
        tiers.filter(Q(endpoint_id=run.base_endpoint_id) | Q(endpoint_id__in=promoted))
        .order_by("position")
        .first()
    )
    if tier is None:
        raise AdapterStageError(
            f"No tier of policy {run.policy.name!r} is served by {run.base_endpoint.name!r}, "
            "the model the adapter was trained from: name the tier."
        )
    return tier


def adapter_shadow_start(
    *,
    run: DistillRun,
    share: Decimal | None = None,
    tier_position: int | None = None,
    user: User | None,
) -> DistillRun:
    """Put the adapter in shadow: for `share` (default: the run's) of the policy's drafts it
    also answers the prompt of the tier at `tier_position` (default: the lowest tier served
    by the base endpoint), never shown. Publishes first if needed; one shadow per policy (an
    earlier shadow run of the policy goes back to candidate). AdapterStageError for a run that
    is not a trained candidate (or already in shadow: then share and tier are updated)."""
    if run.status != DistillRun.Status.SUCCEEDED:
        raise AdapterStageError(f"Adapter v{run.version} has not trained successfully.")
    if share is not None:
        share = _share(share)
    adapter_publish(run=run)

    def start() -> DistillRun:
        locked = DistillRun.objects.select_for_update().get(pk=run.pk)
        if locked.stage not in (DistillRun.Stage.CANDIDATE, DistillRun.Stage.SHADOW):
            raise AdapterStageError(
                f"Adapter v{locked.version} is {locked.get_stage_display().lower()}: only a "
                "candidate goes into shadow."
            )
        tier = _tier(locked, tier_position)
        for other in DistillRun.objects.select_for_update().filter(
            policy_id=locked.policy_id, stage=DistillRun.Stage.SHADOW
        ):
            if other.pk != locked.pk:
                other.stage = DistillRun.Stage.CANDIDATE
                other.save(update_fields=["stage"])
        locked.stage = DistillRun.Stage.SHADOW
        locked.shadow_tier = tier.position
        if share is not None:
            locked.shadow_share = share
        locked.save(update_fields=["stage", "shadow_tier", "shadow_share"])
        return locked

    _in_audit_context(user, start)
    run.refresh_from_db()
    return run


def adapter_shadow_stop(*, run: DistillRun, user: User | None) -> DistillRun:
    """Take the adapter out of shadow (back to candidate); AdapterStageError unless in shadow."""

    def stop() -> DistillRun:
        locked = DistillRun.objects.select_for_update().get(pk=run.pk)
        if locked.stage != DistillRun.Stage.SHADOW:
            raise AdapterStageError(f"Adapter v{locked.version} is not in shadow.")
        locked.stage = DistillRun.Stage.CANDIDATE
        locked.save(update_fields=["stage"])
        return locked

    _in_audit_context(user, stop)
    run.refresh_from_db()
    return run


def adapter_promote(*, run: DistillRun, user: User | None) -> CascadeTier:
    """Serve the policy's tier with the adapter: the tier at the run's shadow tier (else the
    base endpoint's lowest) gets the adapter's endpoint, the endpoint it had is kept on the run
    for rollback, the run is promoted (when, by whom) and a run promoted before it on the
    policy is retired. One transaction, audit-logged (the tier and the run) under `user`.
    AdapterStageError for a run that is not a trained candidate or shadow."""
    if run.status != DistillRun.Status.SUCCEEDED:
        raise AdapterStageError(f"Adapter v{run.version} has not trained successfully.")
    endpoint = adapter_publish(run=run)

    def promote() -> CascadeTier:
        locked = DistillRun.objects.select_for_update().get(pk=run.pk)
        if locked.stage not in (DistillRun.Stage.CANDIDATE, DistillRun.Stage.SHADOW):
            raise AdapterStageError(
                f"Adapter v{locked.version} is {locked.get_stage_display().lower()}: only a "
                "candidate or an adapter in shadow is promoted."
            )
        tier = _tier(locked)
        if tier.endpoint_id == endpoint.pk:
            raise AdapterStageError(f"Tier {tier.position} already serves the adapter.")
        for earlier in DistillRun.objects.select_for_update().filter(
            policy_id=locked.policy_id, stage=DistillRun.Stage.PROMOTED
        ):
            earlier.stage = DistillRun.Stage.RETIRED
            earlier.save(update_fields=["stage"])
        locked.replaced_endpoint_id = tier.endpoint_id
        tier.endpoint = endpoint
        tier.save(update_fields=["endpoint"])
        locked.stage = DistillRun.Stage.PROMOTED
        locked.shadow_tier = tier.position
        locked.promoted_at = timezone.now()
        locked.promoted_by = user
        locked.rolled_back_at = None
        locked.save(
            update_fields=[
                "stage",
                "shadow_tier",
                "promoted_at",
                "promoted_by",
                "replaced_endpoint",
                "rolled_back_at",
            ]
        )
        return tier

    tier = _in_audit_context(user, promote)
    run.refresh_from_db()
    return tier


def adapter_rollback(*, run: DistillRun, user: User | None) -> CascadeTier:
    """Undo a promotion: the tier gets back the endpoint the adapter replaced, the run is
    retired (rolled_back_at set); when that endpoint is an earlier adapter's (retired by this
    promotion), that adapter is promoted again. AdapterStageError unless the run is promoted
    and its tier still serves it."""

    def rollback() -> CascadeTier:
        locked = DistillRun.objects.select_for_update().get(pk=run.pk)
        if locked.stage != DistillRun.Stage.PROMOTED:
            raise AdapterStageError(f"Adapter v{locked.version} is not promoted.")
        if locked.replaced_endpoint_id is None:
            raise AdapterStageError(
                f"The endpoint adapter v{locked.version} replaced is gone: set the tier by hand."
            )
        tier = _tier(locked)
        if tier.endpoint_id != locked.endpoint_id:
            raise AdapterStageError(
                f"Tier {tier.position} no longer serves adapter v{locked.version} "
                f"({tier.endpoint.name} does): nothing to roll back."
            )
        tier.endpoint_id = locked.replaced_endpoint_id
        tier.save(update_fields=["endpoint"])
        locked.stage = DistillRun.Stage.RETIRED
        locked.rolled_back_at = timezone.now()
        locked.save(update_fields=["stage", "rolled_back_at"])
        for previous in DistillRun.objects.select_for_update().filter(
            policy_id=locked.policy_id,
            endpoint_id=locked.replaced_endpoint_id,
            stage=DistillRun.Stage.RETIRED,
            rolled_back_at__isnull=True,
        ):
            previous.stage = DistillRun.Stage.PROMOTED
            previous.save(update_fields=["stage"])
        return tier

    tier = _in_audit_context(user, rollback)
    run.refresh_from_db()
    return tier


# --- An experiment ------------------------------------------------------------------------------


def adapter_experiment_start(*, run: DistillRun, share: Decimal, user: User) -> Experiment:
    """Put the adapter live for `share` of the team's new conversations: an experiment whose
    control arm is the run's policy and whose other arm is an inactive copy of it (same tiers,
    thresholds, intent rules and settings) with the shadowed tier (else the base endpoint's
    lowest) served by the adapter. Publishes first if needed; the copy of an earlier
    experiment of this adapter is reused. ValidationError from drafting.experiments (an
    experiment already runs, the name is taken); AdapterStageError for an untrained or
    retired adapter; ValueError for a share outside (0, 1)."""
    share = _share(share)
    if share >= 1:
        raise ValueError("The adapter's arm needs a share below 1: the control needs some.")
    if run.status != DistillRun.Status.SUCCEEDED or run.stage == DistillRun.Stage.RETIRED:
        raise AdapterStageError(f"Adapter v{run.version} cannot be put live ({run.stage}).")
    endpoint = adapter_publish(run=run)
    policy = run.policy
    name = f"Adapter v{run.version}"

    def copy() -> CascadePolicy:
        tier = _tier(run)
        copied = CascadePolicy.objects.filter(team_id=run.team_id, name=_copy_name(run)).first()
        if copied is None:
            copied = CascadePolicy.objects.get(pk=policy.pk)
            copied.pk = None
            copied.id = None
            copied.name = _copy_name(run)
            copied.active = False
            copied.created_at = timezone.now()
            copied.save()
            for original in policy.tiers.all().order_by("position"):
                rules = list(original.intent_rules.all())
                original.pk = None
                original.id = None
                original.policy = copied
                original.save()
                for rule in rules:
                    IntentRule.objects.create(
                        tier=original,
                        intent_id=rule.intent_id,
                        threshold=rule.threshold,
                        skip=rule.skip,
                        n_labels=rule.n_labels,
                    )
        served = copied.tiers.get(position=tier.position)
        if served.endpoint_id != endpoint.pk:
            served.endpoint = endpoint
            served.save(update_fields=["endpoint"])
        return copied

    arm = _in_audit_context(user, copy)
    return experiments.experiment_start(
        team=run.team,
        name=name,
        arms=[("control", policy, Decimal(1) - share), (name.lower(), arm, share)],
        note=f"Adapter v{run.version} ({run.adapter_name}) live for {share:%} of the new "
        f"conversations against policy {policy.name!r}.",
        user=user,
    )


def _copy_name(run: DistillRun) -> str:
    return f"{run.policy.name} + adapter v{run.version}"[:120]


# --- Shadow answers (the worker) ----------------------------------------------------------------


@dataclass(frozen=True)
class Shadow:
    """A policy's adapter in shadow, as the draft path needs it."""

    run_id: int
    share: Decimal


_SHADOW_LOCK = "csbot.adapters.shadow"
_shadows: Memo[int, Shadow | None] = Memo(depends_on=(DistillRun, ModelEndpoint))


def _load_shadow(policy_id: int) -> Shadow | None:
    row = (
        # An admin who disables the adapter's endpoint stops its shadow answers too.
        DistillRun.objects.filter(
            policy_id=policy_id, stage=DistillRun.Stage.SHADOW, endpoint__enabled=True
        )
        .values_list("pk", "shadow_share")
        .first()
    )
    return Shadow(run_id=row[0], share=row[1]) if row is not None and row[1] > 0 else None


def shadow_sample(*, policy_id: int, draw: Callable[[], float] = random.random) -> Shadow | None:
    """The policy's adapter in shadow when this draft is drawn to be answered by it too
    (`draw()` < its share), else None. Read on every draft: kept a few seconds (csbot.memo)."""
    shadow = _shadows.get(policy_id, lambda: _load_shadow(policy_id))
    if shadow is None or draw() >= float(shadow.share):
        return None
    return shadow


def shadow_enqueue(draft_id: int, run_id: int) -> None:
    """Ring `draft_shadow` (after the draft's commit); a broker that is down loses only the
    comparison, never the draft."""
    from drafting.tasks import draft_shadow_task  # the tasks module imports this one

    try:
        draft_shadow_task.delay(draft_id, run_id)
    except (KombuOperationalError, OSError):
        logger.exception("draft %s: could not reach the broker; no shadow answer", draft_id)


def draft_shadow(*, draft_id: int, run_id: int) -> bool:
    """The adapter in shadow answers a ready draft's prompt; whether it was asked.

    Steps: leave quietly unless the run is still in shadow with an enabled endpoint, the draft is
    ready and of the run's policy, and it has no shadow answer of this adapter yet (a repeated
    task asks nothing); load the adapter into its server if that server lost it (restarted);
    ask it once through the cascade as the shadowed tier (same position, the adapter's
    endpoint, no threshold) with the draft's prompt, stored passages, few-shot examples and
    the policy's scorer, the lower tiers' kept answers as earlier drafts (what an escalation
    would have shown the scorer), exactly as exploration asks a tier; store the one attempt
    (purpose SHADOW, exploratory, propensity = the shadow share, its text kept) and add its
    cost to the draft's total (money spent on the message). The draft's status, text,
    endpoint and score never change."""
    run = (
        DistillRun.objects.select_related("endpoint")
        .filter(pk=run_id, stage=DistillRun.Stage.SHADOW, endpoint__enabled=True)
        .first()
    )
    if run is None or run.endpoint is None or run.shadow_tier is None:
        return False
    # Two deliveries of the task (a retry, a worker lost mid-task) must not both pay for an
    # answer: the second waits for no one, it finds the lock taken and leaves.
    with advisory_lock(_SHADOW_LOCK, draft_id) as held:
        return held and _answer_in_shadow(run, draft_id)


def _answer_in_shadow(run: DistillRun, draft_id: int) -> bool:
    assert run.endpoint is not None and run.shadow_tier is not None
    answered = DraftAttempt.objects.filter(
        draft_id=OuterRef("pk"), purpose=DraftAttempt.Purpose.SHADOW, endpoint_id=run.endpoint_id
    )
    draft = (
        services.ready_drafts_to_replay()
        .filter(pk=draft_id, policy_id=run.policy_id)
        .filter(~Exists(answered))
        .first()
    )
    if draft is None:
        return False
    endpoint = run.endpoint
    lora = run.serving == DistillRun.Serving.LORA
    url = endpoint.resolved_base_url()
    if lora and localserver.probe(url, api_key=_api_key(endpoint)) is not None:
        _load(run, endpoint)  # a no-op when served; a restarted server gets it back
    earlier = list(
        DraftAttempt.objects.filter(
            draft_id=draft_id,
            purpose=DraftAttempt.Purpose.DRAFT,
            exploratory=False,
            outcome=DraftAttempt.Outcome.OK,
            tier__lt=run.shadow_tier,
        )
        .exclude(text="")
        .order_by("tier", "started_at", "id")
        .values_list("text", flat=True)
    )
    replay = services.draft_replay_prompt(draft)
    result = replay.ask(
        CascadeTier(policy_id=run.policy_id, position=run.shadow_tier, endpoint=endpoint),
        earlier=earlier,
    )
    rows = [
        services.attempt_row(draft_id, a, keep_text=True, exploratory=True)
        for a in result.attempts[:1]
    ]
    if not rows:
        return False  # the deadline passed before the adapter could be asked
    rows[0].purpose = DraftAttempt.Purpose.SHADOW
    rows[0].propensity = run.shadow_share
    with transaction.atomic():
        DraftAttempt.objects.bulk_create(rows)
        cost = result.attempts[0].cost
        Draft.objects.filter(pk=draft_id).update(total_cost=F("total_cost") + cost)
        # A bulk write sends no post_save: say so (accounting re-sums a rolled-up day).
        attempts_added.send(sender=DraftAttempt, draft_ids=[draft_id])
    return True


__all__ = [
    "AdapterStageError",
    "Shadow",
    "adapter_experiment_start",
    "adapter_promote",
    "adapter_publish",
    "adapter_rollback",
    "adapter_serve_lora",
    "adapter_serve_merged",
    "adapter_shadow_start",
    "adapter_shadow_stop",
    "adapters_serving",
    "draft_shadow",
    "merged_serving",
    "shadow_enqueue",
    "shadow_sample",
]
