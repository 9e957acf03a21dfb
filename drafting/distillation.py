"""Distillation runs: a team's sent replies become a versioned LoRA adapter, and what it cost.

One run is one DistillRun row, created before anything else so that the row is the truth even
if the process dies: the export it trained on (filters, hash, counts, the files themselves in the
adapter's folder), the hyper-parameters, the loss curve and validation figures, the device, the
machine time and what that time cost at the base endpoint's $/hour. accounting books the cost as
a one-off fixed cost when the run finishes (accounting.distill), so break-even counts it. A run
that fails is charged too: the machine was busy all the same.

`distill_nightly` is the scheduled retrain (beat's "retrain-adapters", off per policy by
default): a policy with `distill_nightly` on trains a new adapter once `distill_min_replies`
replies were sent since its last run.

torch, transformers and peft are imported only when training starts (drafting.learning.distill),
so importing this module costs the web process nothing; the tasks import it inside the task.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from csbot.locks import advisory_lock
from csbot.models import Team
from drafting.learning.distill import Hyper, train_adapter
from drafting.learning.distill_data import (
    DistillDataError,
    DistillExport,
    ExportFilters,
    distill_examples,
    read_export,
    write_export,
)
from drafting.localserver.config import model_dir
from drafting.models import (
    MONEY_PLACES,
    AgentAction,
    CascadePolicy,
    DistillRun,
    EndpointPrice,
    ModelEndpoint,
)

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

_MONEY = Decimal(1).scaleb(-MONEY_PLACES)
_SECONDS = Decimal("0.001")
# The PostgreSQL advisory lock the nightly retrain holds: one retrain at a time on the whole
# installation (two workers, or a slow night running into the next).
_NIGHTLY_LOCK = "csbot.distill.nightly"
# The replies a run learns from: those the agent sent from a draft (AgentAction USE/EDIT).
SENT_KINDS = (AgentAction.Kind.USE, AgentAction.Kind.EDIT)


class DistillRunError(ValueError):
    """The run cannot start (no local tier to fine-tune): nothing was recorded."""


def distill_base_endpoint(*, policy: CascadePolicy) -> ModelEndpoint:
    """The endpoint the adapter fine-tunes: the policy's first tier on an enabled local endpoint."""
    tier = (
        policy.tiers.select_related("endpoint")
        .filter(endpoint__kind=ModelEndpoint.Kind.LOCAL, endpoint__enabled=True)
        .order_by("position")
        .first()
    )
    if tier is None:
        raise DistillRunError(
            f"policy {policy.name!r} has no enabled local tier: there is no local model to "
            "fine-tune"
        )
    return tier.endpoint


def distill_hour_usd(*, endpoint: ModelEndpoint, at: datetime) -> Decimal | None:
    """The endpoint's GPU $/hour in force at `at` (its EndpointPrice row); None without one."""
    price = (
        EndpointPrice.objects.filter(endpoint=endpoint, effective_from__lte=at)
        .order_by("-effective_from")
        .first()
    )
    return price.gpu_hour_usd if price is not None else None


def distill_cost(*, machine_seconds: Decimal, hour_usd: Decimal) -> Decimal:
    """machine_seconds / 3600 × hour_usd, rounded like every amount of money (MONEY_PLACES)."""
    return (machine_seconds * hour_usd / 3600).quantize(_MONEY, rounding=ROUND_HALF_UP)


def _run_create(
    *,
    policy: CascadePolicy,
    base: ModelEndpoint,
    hyper: Hyper,
    hour_usd: Decimal,
    created_by: User | None,
) -> DistillRun:
    """The run's row, with the team's next version: the team's row is locked while the version
    is chosen, so two runs of one team never take the same number."""
    with transaction.atomic():
        Team.objects.select_for_update().filter(pk=policy.team_id).first()
        last = DistillRun.objects.filter(team_id=policy.team_id).aggregate(v=Max("version"))["v"]
        version = (last or 0) + 1
        name = f"csbot-{policy.team_id}-v{version}"
        now = timezone.now()
        return DistillRun.objects.create(
            team_id=policy.team_id,
            policy=policy,
            version=version,
            base_endpoint=base,
            base_model=model_dir().name,
            adapter_name=name,
            adapter_path=str(Path(settings.DISTILL_ADAPTER_DIR) / name),
            status=DistillRun.Status.RUNNING,
            hyperparameters=hyper.as_dict(),
            hour_usd=hour_usd,
            created_by=created_by,
            created_at=now,
            started_at=now,
        )


def _seconds(started: float) -> Decimal:
    return Decimal(time.monotonic() - started).quantize(_SECONDS, rounding=ROUND_HALF_UP)


def distill_run_train(
    *,
    policy: CascadePolicy,
    filters: ExportFilters | None = None,
    data_dir: Path | None = None,
    hyper: Hyper | None = None,
    hour_usd: Decimal | None = None,
    created_by: User | None = None,
    progress: Progress | None = None,
) -> DistillRun:
    """Train the next adapter of the policy's team and record it; returns the finished run.

    Steps: find the base (the policy's first enabled local tier; DistillRunError when there is
    none, before any row exists; the export in `data_dir` is read and checked then too); create
    the run's row (status running, next version); export the team's sent replies with
    `filters` (default: all of the team's), or take `data_dir`'s, and write the export into the
    adapter's folder (`data/`), so the run keeps the exact files it learned from and their
    hash; train the adapter into the folder; store the figures, the machine time (the whole
    run's wall-clock time in this process: export, loading the model, training, validation,
    saving) and its cost. Any failure after the row exists is recorded on it (status failed,
    error, the time used so far and its cost) and the run is returned all the same: the caller
    reads `status`.
    """
    say = progress or (lambda _message: None)
    hyper = hyper or Hyper()
    base = distill_base_endpoint(policy=policy)
    given = None
    if data_dir is not None:
        # Read (and checked against its manifest) before the run exists: a wrong folder is a
        # mistake to correct, not a run to record and charge.
        say(f"reading the export in {data_dir}")
        given = read_export(data_dir)
        if given.filters.team_id != policy.team_id:
            raise DistillRunError(f"the export in {data_dir} is another team's")
    elif filters is not None and filters.team_id != policy.team_id:
        raise DistillRunError("the export filters name another team than the policy's")
    if hour_usd is None:
        hour_usd = distill_hour_usd(endpoint=base, at=timezone.now())
        if hour_usd is None:
            logger.warning(
                "endpoint %s has no price in force: the training run is charged $0", base.name
            )
            say(f"warning: endpoint {base.name!r} has no price in force, the run costs $0")
            hour_usd = Decimal(0)
    run = _run_create(
        policy=policy, base=base, hyper=hyper, hour_usd=hour_usd, created_by=created_by
    )
    say(f"run {run.adapter_name} (version {run.version}) on the base {run.base_model}")
    started = time.monotonic()
    folder = Path(run.adapter_path)
    try:
        export = _export(run=run, filters=filters, given=given, folder=folder, say=say)
        result = train_adapter(
            base_dir=model_dir(),
            train=export.train,
            validation=export.validation,
            out_dir=folder,
            hyper=hyper,
            progress=say,
        )
    except Exception as error:
        # Recorded, then raised no further: the row is what the command, the admin and the
        # nightly job read, and the time already spent is a cost like any other.
        if isinstance(error, DistillDataError):  # the data, not the code: no traceback
            logger.warning("distillation run %s failed: %s", run.adapter_name, error)
        else:
            logger.exception("distillation run %s failed", run.adapter_name)
        run.status = DistillRun.Status.FAILED
        run.error = f"{type(error).__name__}: {error}"
        _finish(run, started)
        say(f"run {run.adapter_name} failed: {run.error}")
        return run
    run.n_train = result.n_train
    run.n_validation = result.n_validation
    run.loss_curve = result.loss_curve
    run.validation = {
        **result.validation,
        "steps": result.steps,
        "trainable_parameters": result.trainable_parameters,
        "train_seconds": round(result.seconds, 3),
    }
    run.device = result.device
    run.status = DistillRun.Status.SUCCEEDED
    _finish(run, started)
    return run


def _export(
    *,
    run: DistillRun,
    filters: ExportFilters | None,
    given: DistillExport | None,
    folder: Path,
    say: Progress,
) -> DistillExport:
    """The run's training set (`given`, or exported now with `filters`), written into its
    folder (the same export writes the same bytes: the hash is the given folder's); its
    filters, hash and counts stored on the run."""
    if given is not None:
        export = given
    else:
        say("exporting the team's sent replies")
        export = distill_examples(filters or ExportFilters(team_id=run.team_id), progress=say)
    manifest = write_export(export, folder / "data")
    run.filters = export.filters.as_dict()
    run.data_sha256 = manifest["data_sha256"]
    run.n_train = len(export.train)
    run.n_validation = len(export.validation)
    run.n_conversations = sum(export.n_conversations)
    run.save(update_fields=["filters", "data_sha256", "n_train", "n_validation", "n_conversations"])
    say(
        f"{run.n_train} training and {run.n_validation} validation examples from "
        f"{run.n_conversations} conversations (data {run.data_sha256[:12]})"
    )
    return export


def _finish(run: DistillRun, started: float) -> None:
    run.machine_seconds = _seconds(started)
    run.cost_usd = distill_cost(machine_seconds=run.machine_seconds, hour_usd=run.hour_usd)
    run.finished_at = timezone.now()
    # A full save: accounting's receiver books the cost on the finished row (post_save).
    run.save()
    run.refresh_from_db()  # the figures as stored (decimal places), for whoever reports them


# --- The nightly retrain -------------------------------------------------------------------------


def distill_sent_since(*, policy: CascadePolicy, since: datetime | None) -> int:
    """Replies agents sent from the policy's drafts after `since` (all of them for None)."""
    sent = AgentAction.objects.filter(draft__policy=policy, kind__in=SENT_KINDS)
    if since is not None:
        sent = sent.filter(acted_at__gt=since)
    return sent.count()


def distill_nightly(
    *,
    hyper: Hyper | None = None,
    min_conversations: int | None = None,
    progress: Progress | None = None,
) -> list[DistillRun]:
    """The scheduled retrain: for each active policy with `distill_nightly` on and at least
    `distill_min_replies` replies sent since its last run (any, for the first), one run on the
    policy's replies since its last successful run, with the default hyper-parameters and
    export filters unless given.

    One at a time: nothing when another process holds the retrain lock, and a policy whose
    team has a run still training is skipped. Returns the runs made (failed ones included).
    """
    runs: list[DistillRun] = []
    with advisory_lock(_NIGHTLY_LOCK) as held:
        if not held:
            logger.info("another distillation retrain is running: skipped")
            return runs
        for policy in CascadePolicy.objects.filter(active=True, distill_nightly=True):
            team_runs = DistillRun.objects.filter(team_id=policy.team_id)
            if team_runs.filter(status=DistillRun.Status.RUNNING).exists():
                continue
            own = team_runs.filter(policy=policy).order_by("-created_at")
            last = own.first()
            # A failed run resets the count too: a setup that fails is not paid for again
            # every night; its replies still go into the next run (since the last success).
            new = distill_sent_since(policy=policy, since=last.created_at if last else None)
            if new < policy.distill_min_replies:
                continue
            succeeded = own.filter(status=DistillRun.Status.SUCCEEDED).first()
            filters = ExportFilters(
                team_id=policy.team_id,
                policy_id=policy.pk,
                since=timezone.localdate(succeeded.created_at) if succeeded else None,
            )
            if min_conversations is not None:
                filters = replace(filters, min_conversations=min_conversations)
            logger.info("nightly distillation for policy %s: %d new sent replies", policy, new)
            runs.append(
                distill_run_train(policy=policy, filters=filters, hyper=hyper, progress=progress)
            )
    return runs
