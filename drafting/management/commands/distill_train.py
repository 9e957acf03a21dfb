"""`manage.py distill_train --team NAME|ID [--policy ID] [--data DIR | export filters]
[hyper-parameters] [--hour-usd X] [--json]`: train the next LoRA adapter of a team's local model
from the replies its agents sent (drafting.distillation.distill_run_train).

Progress (export, steps, loss, time left) goes to stderr; then the run's figures, or one JSON
object with --json, on stdout. The export is made with the same filters as `distill_export`
(`--since --until --intent --min-conversations --validation-share`), or read from a folder
`distill_export` wrote (`--data DIR`). `--seed` seeds both the split and the training. The same
command trains on a GPU when the machine has one (the trainer picks cuda). A failed run is
recorded and charged, and the command exits non-zero saying why.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from drafting.distillation import DistillRunError, distill_run_train
from drafting.learning.distill import Hyper
from drafting.learning.distill_data import DistillDataError, ExportFilters
from drafting.management.commands.knowledge_import import team_named
from drafting.models import CascadePolicy, DistillRun

# Hyper-parameter options: name -> (type, smallest value allowed).
_HYPER: dict[str, tuple[type, float]] = {
    "epochs": (int, 1),
    "rank": (int, 1),
    "alpha": (int, 1),
    "learning_rate": (float, 1e-9),
    "batch_size": (int, 1),
    "max_length": (int, 16),
    "max_steps": (int, 1),
    "generate_validation": (int, 0),
    "seed": (int, 0),
}
_FILTERS = ("since", "until", "intent", "min_conversations", "validation_share")


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as error:
        raise CommandError(f"not a date (YYYY-MM-DD): {value!r}") from error


def _money(value: str) -> Decimal:
    try:
        amount = Decimal(value)
    except InvalidOperation as error:
        raise CommandError(f"--hour-usd is not a number: {value!r}") from error
    if not amount.is_finite() or amount < 0:
        raise CommandError("--hour-usd must be zero or more")
    return amount


def figures(run: DistillRun) -> dict[str, Any]:
    """What the command reports of a run (the JSON object; the text lines say the same)."""
    validation = run.validation or {}
    return {
        "run_id": run.pk,
        "team": run.team_id,
        "policy": run.policy_id,
        "version": run.version,
        "status": run.status,
        "adapter_name": run.adapter_name,
        "adapter_path": run.adapter_path,
        "base_model": run.base_model,
        "data_sha256": run.data_sha256,
        "n_train": run.n_train,
        "n_validation": run.n_validation,
        "n_conversations": run.n_conversations,
        "loss_before": validation.get("loss_before"),
        "loss_after": validation.get("loss"),
        "rouge_l": validation.get("rouge_l"),
        "steps": validation.get("steps"),
        "device": run.device,
        "machine_seconds": str(run.machine_seconds),
        "hour_usd": str(run.hour_usd),
        "cost_usd": str(run.cost_usd),
        "error": run.error,
    }


def _loss(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "–"


class Command(BaseCommand):
    help = "Train the next LoRA adapter of a team's local model from the replies agents sent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--team", required=True, help="the team's name or id")
        parser.add_argument(
            "--policy", type=int, help="the policy whose local tier it is for (default: active)"
        )
        parser.add_argument("--data", type=Path, help="a folder distill_export wrote")
        parser.add_argument("--since", help="export: replies from this day (YYYY-MM-DD)")
        parser.add_argument("--until", help="export: replies up to this day, inclusive")
        parser.add_argument("--intent", help="export: only messages of this intent")
        parser.add_argument("--min-conversations", type=int)
        parser.add_argument("--validation-share", type=float)
        for name, (kind, _lowest) in _HYPER.items():
            parser.add_argument(f"--{name.replace('_', '-')}", type=kind)
        parser.add_argument("--hour-usd", help="machine $/hour (default: the base endpoint's)")
        parser.add_argument("--json", action="store_true", help="one JSON object on stdout")

    def handle(self, *args: Any, **options: Any) -> None:
        team = team_named(options["team"])
        policies = CascadePolicy.objects.filter(team=team)
        if options["policy"] is not None:
            policy = policies.filter(pk=options["policy"]).first()
            if policy is None:
                raise CommandError(f"team {team.name!r} has no policy {options['policy']}")
        else:
            policy = policies.filter(active=True).first()
            if policy is None:
                raise CommandError(f"team {team.name!r} has no active policy: pass --policy")
        hyper = self._hyper(options)
        filters = None
        data_dir = options["data"]
        if data_dir is not None:
            given = [f"--{n.replace('_', '-')}" for n in _FILTERS if options[n] is not None]
            if given:
                raise CommandError(f"--data reads a finished export: {', '.join(given)} unused")
            if not (data_dir / "manifest.json").is_file():
                raise CommandError(f"{data_dir} is not an export folder (no manifest.json)")
        else:
            filters = self._filters(options, team_id=team.pk, seed=hyper.seed)
        hour_usd = _money(options["hour_usd"]) if options["hour_usd"] is not None else None

        def say(message: str) -> None:
            self.stderr.write(message)
            self.stderr.flush()

        try:
            run = distill_run_train(
                policy=policy,
                filters=filters,
                data_dir=data_dir,
                hyper=hyper,
                hour_usd=hour_usd,
                progress=say,
            )
        except (DistillRunError, DistillDataError) as error:
            raise CommandError(str(error)) from error
        if options["json"]:
            self.stdout.write(json.dumps(figures(run), sort_keys=True))
        else:
            self._report(run)
        if run.status != DistillRun.Status.SUCCEEDED:
            raise CommandError(
                f"run {run.adapter_name} failed: {run.error} "
                f"({run.machine_seconds} s of machine time, ${run.cost_usd} booked)"
            )

    def _hyper(self, options: dict[str, Any]) -> Hyper:
        values: dict[str, Any] = {}
        for name, (_kind, lowest) in _HYPER.items():
            value = options[name]
            if value is None:
                continue
            if value < lowest:
                raise CommandError(f"--{name.replace('_', '-')} must be at least {lowest:g}")
            values[name] = value
        return Hyper(**values)

    def _filters(self, options: dict[str, Any], *, team_id: int, seed: int) -> ExportFilters:
        values: dict[str, Any] = {"team_id": team_id, "seed": seed}
        for name in ("since", "until"):
            if options[name] is not None:
                values[name] = _day(options[name])
        if values.get("since") and values.get("until") and values["since"] > values["until"]:
            raise CommandError("--since is after --until")
        if options["intent"] is not None:
            values["intent"] = options["intent"]
        if options["min_conversations"] is not None:
            if options["min_conversations"] < 1:
                raise CommandError("--min-conversations must be at least 1")
            values["min_conversations"] = options["min_conversations"]
        if options["validation_share"] is not None:
            if not 0 <= options["validation_share"] < 1:
                raise CommandError("--validation-share must be in [0, 1)")
            values["validation_share"] = options["validation_share"]
        try:
            return ExportFilters(**values)
        except DistillDataError as error:
            raise CommandError(str(error)) from error

    def _report(self, run: DistillRun) -> None:
        shown = figures(run)
        lines = [
            f"{run.adapter_name} (version {run.version}, {run.status}) in {run.adapter_path}",
            f"  data {run.data_sha256[:16] or '–'}: {run.n_train} train, "
            f"{run.n_validation} validation examples, {run.n_conversations} conversations",
            f"  validation loss {_loss(shown['loss_before'])} → {_loss(shown['loss_after'])}"
            + (f", ROUGE-L {shown['rouge_l']:.3f}" if isinstance(shown["rouge_l"], float) else ""),
            f"  {run.machine_seconds} s on {run.device or '–'} at ${run.hour_usd}/h: "
            f"${run.cost_usd}",
        ]
        for line in lines:
            self.stdout.write(line)
