"""The dashboard's forms: which ENCS to show (period, team, policy) and the what-if calculator."""

from __future__ import annotations

import calendar
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator
from django.forms import BoundField
from django.http import QueryDict

from accounting.dashboard import Viewer
from accounting.engine import whatif
from accounting.facts import DRAFTED_KINDS, Scope
from accounting.figures import EncsReport, WhatIf, plain
from accounting.reports import FIRST_DAY, LAST_DAY
from drafting.models import CascadePolicy

# Longer periods read too many facts for a page view; the monthly reports cover history.
MAX_DAYS = 731

# Upper bounds of the what-if's figures (here and in the API's): generous for any real
# support team, and small enough that ENCS per year keeps its ten decimal places within
# Decimal's 28 digits (beyond, the arithmetic raises instead of answering).
MAX_AGENT_HOURLY_USD = Decimal(10_000)
MAX_SECONDS = Decimal(86_400)  # a day per reply
MAX_COST_PER_RESPONSE_USD = Decimal(1_000)
MAX_MESSAGES_PER_YEAR = 10**10


def reportable_day(label: str, widget: forms.Widget) -> forms.DateField:
    return forms.DateField(
        label=label,
        widget=widget,
        validators=[MinValueValidator(FIRST_DAY), MaxValueValidator(LAST_DAY)],
    )


def this_month(today: date) -> tuple[date, date]:
    """First and last day of `today`'s month."""
    return today.replace(day=1), today.replace(day=calendar.monthrange(today.year, today.month)[1])


class _PolicyChoice(forms.ModelChoiceField[CascadePolicy]):
    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.team.name} / {obj.name}"


class EncsFilterForm(forms.Form):
    """GET filters `from`, `to` (both inclusive, default: this month), `team` and `policy`,
    limited to what the viewer may see. An id outside that is an invalid choice, which the
    views answer with 404, as for any object one may not see."""

    def __init__(self, data: QueryDict | None, *, viewer: Viewer, today: date) -> None:
        first, last = this_month(today)
        data = data.copy() if data is not None else QueryDict(mutable=True)
        # Empty or missing dates take the defaults and show them in the form.
        for key, default in (("from", first), ("to", last)):
            if not data.get(key):
                data[key] = default.isoformat()
        super().__init__(data)
        self.viewer = viewer
        date_input = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
        # `from` is a Python keyword, so the fields are added here rather than declared.
        self.fields["from"] = reportable_day("From", date_input)
        self.fields["to"] = reportable_day("To (inclusive)", date_input)
        self.fields["team"] = forms.ModelChoiceField(
            queryset=viewer.teams(),
            required=False,
            # One team to see: it is preselected, there is no "all".
            empty_label="All teams" if viewer.team_id is None else None,
        )
        policies = viewer.policies()
        self.fields["policy"] = (
            _PolicyChoice(queryset=policies, required=False, empty_label="All policies")
            if viewer.team_id is None
            else forms.ModelChoiceField(
                queryset=policies, required=False, empty_label="All policies"
            )
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start, last = cleaned.get("from"), cleaned.get("to")
        if start and last:
            if last < start:
                self.add_error("to", "The period ends before it starts.")
            elif (last - start).days >= MAX_DAYS:
                self.add_error("to", f"Choose at most {MAX_DAYS} days.")
        team, policy = cleaned.get("team"), cleaned.get("policy")
        if team is not None and isinstance(policy, CascadePolicy) and policy.team_id != team.pk:
            self.add_error("policy", f"{policy.name} is not a policy of {team.name}.")
        return cleaned

    @property
    def not_visible(self) -> bool:
        """A team or policy id the viewer may not see (or that does not exist)."""
        return "team" in self.errors or "policy" in self.errors

    def scope(self) -> Scope:
        data = self.cleaned_data
        team, policy = data.get("team"), data.get("policy")
        return Scope(
            start=data["from"],
            end=data["to"] + timedelta(days=1),
            team_ids=(team.pk,) if team is not None else self.viewer.team_ids,
            policy_ids=(policy.pk,) if policy is not None else None,
        )

    def query(self) -> dict[str, str]:
        """The filters as GET parameters, for links to the report in the same scope."""
        data = self.cleaned_data
        params = {"from": data["from"].isoformat(), "to": data["to"].isoformat()}
        if data.get("team") is not None:
            params["team"] = str(data["team"].pk)
        if data.get("policy") is not None:
            params["policy"] = str(data["policy"].pk)
        return params


# Django's DecimalField refuses NaN and infinities, and with max_digits also 1e999999: every
# number the what-if reads is a finite decimal of bounded size.


class PlainNumberInput(forms.NumberInput):
    """A number input that writes a Decimal positionally: the period's figures are normalised
    (30.000 -> 30), and str() of a normalised Decimal is "3E+1", which a browser shows as is.
    What a user typed (a string) is shown back unchanged."""

    def format_value(self, value: Any) -> str | None:
        if isinstance(value, Decimal) and value.is_finite():
            return plain(value)
        return super().format_value(value)


def _money_field(label: str, *, max_value: Decimal) -> forms.DecimalField:
    return forms.DecimalField(
        label=label,
        min_value=Decimal(0),
        max_value=max_value,
        max_digits=20,
        decimal_places=10,
        widget=PlainNumberInput,
    )


def _seconds_field(label: str, *, min_value: Decimal = Decimal(0)) -> forms.DecimalField:
    return forms.DecimalField(
        label=label,
        min_value=min_value,
        max_value=MAX_SECONDS,
        max_digits=10,
        decimal_places=3,
        help_text="seconds",
        widget=PlainNumberInput,
    )


def _share_field(label: str) -> forms.DecimalField:
    return forms.DecimalField(
        label=label,
        min_value=Decimal(0),
        max_value=Decimal(100),
        max_digits=6,
        decimal_places=2,
        help_text="% of drafts",
        widget=PlainNumberInput,
    )


_MEASURED = forms.DecimalField(required=False, max_digits=28, decimal_places=10)


def measured_encs(value: str | None) -> Decimal | None:
    """The measured ENCS per draft that the what-if panel carries along in a hidden field: a
    finite decimal of money's size, or None for anything else (nothing to compare with)."""
    try:
        return _MEASURED.clean(value)
    except forms.ValidationError:
        return None


class WhatIfForm(forms.Form):
    """The paper's arithmetic with assumed figures: "what if edits got faster, the model got
    cheaper, volume doubled?". Shares are percentages of drafted messages (the rest saves
    nothing); defaults are this period's measured figures."""

    prefix = "w"

    agent_hourly_usd = _money_field("Agent cost, $ per hour", max_value=MAX_AGENT_HOURLY_USD)
    baseline_seconds = _seconds_field("Unaided reply (baseline)", min_value=Decimal("0.001"))
    use_seconds = _seconds_field("Handle time, used")
    edit_seconds = _seconds_field("Handle time, edited")
    ignore_seconds = _seconds_field("Handle time, ignored")
    use_pct = _share_field("Used as is")
    edit_pct = _share_field("Edited")
    ignore_pct = _share_field("Ignored")
    cost_per_response_usd = _money_field(
        "Model cost per draft, $", max_value=MAX_COST_PER_RESPONSE_USD
    )
    messages_per_year = forms.IntegerField(
        label="Messages per year", min_value=0, max_value=MAX_MESSAGES_PER_YEAR
    )

    def time_fields(self) -> list[BoundField]:
        names = ("agent_hourly_usd", "baseline_seconds", "use_seconds", "edit_seconds")
        return [self[name] for name in (*names, "ignore_seconds")]

    def draft_fields(self) -> list[BoundField]:
        names = ("use_pct", "edit_pct", "ignore_pct", "cost_per_response_usd")
        return [self[name] for name in (*names, "messages_per_year")]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        shares = [cleaned.get(f"{k}_pct") for k in DRAFTED_KINDS]
        if sum((s for s in shares if s is not None), Decimal(0)) > 100:
            raise forms.ValidationError("Used, edited and ignored add up to more than 100 %.")
        return cleaned

    def result(self) -> WhatIf:
        data = self.cleaned_data
        return whatif(
            agent_hourly_usd=data["agent_hourly_usd"],
            baseline_seconds=data["baseline_seconds"],
            handle_seconds={k: data[f"{k}_seconds"] for k in DRAFTED_KINDS},
            shares={k: data[f"{k}_pct"] / 100 for k in DRAFTED_KINDS},
            cost_per_response_usd=data["cost_per_response_usd"],
            messages_per_year=data["messages_per_year"],
        )

    @staticmethod
    def initial_from(
        report: EncsReport, *, agent_hourly_usd: Decimal, default_baseline_seconds: Decimal
    ) -> dict[str, Any]:
        """The period's measured figures as what-if inputs: its baseline (the default when
        teams differ), mean handle times (the baseline where none was measured: no
        saving), the shares P(a) of all drafts, mean cost per draft, and the message volume
        scaled to a year."""
        totals = report.totals
        baseline = report.baseline_seconds or default_baseline_seconds
        initial: dict[str, Any] = {
            "agent_hourly_usd": agent_hourly_usd.normalize(),
            "baseline_seconds": baseline.normalize(),
        }
        for kind, share in totals.shares.items():
            initial[f"{kind}_seconds"] = (totals.handle_seconds[kind] or baseline).normalize()
            initial[f"{kind}_pct"] = (share * 100).quantize(Decimal("0.01"))
        cost = totals.cost_per_draft_usd or Decimal(0)
        initial["cost_per_response_usd"] = cost.normalize()
        days = (report.last - report.start).days + 1
        initial["messages_per_year"] = round(totals.messages * 365 / days)
        return initial
