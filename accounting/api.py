"""ENCS over the REST API (mounted under /api/v1/ with the support domain's authentication):
the caller's team only, the same figures as the dashboard and the monthly report."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.core.validators import MaxValueValidator, MinValueValidator
from django.urls import path
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from accounting.dashboard import FINANCE_ROLES
from accounting.engine import GROUP_BY, SettingsMissing, whatif
from accounting.facts import DRAFTED_KINDS, Scope
from accounting.forms import (
    MAX_AGENT_HOURLY_USD,
    MAX_COST_PER_RESPONSE_USD,
    MAX_MESSAGES_PER_YEAR,
    MAX_SECONDS,
)
from accounting.knowledge import KnowledgeReport, knowledge_report
from accounting.reports import FIRST_DAY, LAST_DAY
from accounting.selectors import encs_report
from csbot.api.auth import HasTeam, request_team
from csbot.api.serializers import StrictSerializer
from csbot.models import ApiToken, Team
from drafting.models import CascadePolicy

MAX_DAYS = 366


class FinanceOrIntegration(HasTeam):
    """A channel token (the team's integration), or a manager or admin of the team: money is
    not an agent's business, on the API as on the dashboard."""

    message = "ENCS is for managers, admins and integration tokens."

    def has_permission(self, request: Request, view: Any) -> bool:
        if not super().has_permission(request, view):
            return False
        if isinstance(request.auth, ApiToken):
            return True
        profile = getattr(request.user, "agent_profile", None)
        return profile is not None and profile.role in FINANCE_ROLES


def _day(help_text: str) -> serializers.DateField:
    return serializers.DateField(
        required=False,
        help_text=help_text,
        validators=[MinValueValidator(FIRST_DAY), MaxValueValidator(LAST_DAY)],
    )


class EncsQuery(StrictSerializer):
    from_ = _day("First day (default: this month's 1st).")
    to = _day("Last day, included (default: today).")
    group_by = serializers.ChoiceField(choices=GROUP_BY, required=False, allow_null=True)
    policy = serializers.IntegerField(required=False, min_value=1)

    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()
        fields["from"] = fields.pop("from_")  # `from` is a Python keyword
        return fields

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        today = timezone.localdate()
        start = attrs.get("from") or today.replace(day=1)
        end = attrs.get("to") or today
        if end < start:
            raise serializers.ValidationError({"to": ["Must not be before `from`."]})
        if (end - start).days >= MAX_DAYS:
            raise serializers.ValidationError({"to": [f"At most {MAX_DAYS} days per request."]})
        attrs["from"], attrs["to"] = start, end
        return attrs


def _shares(name: str) -> serializers.DecimalField:
    return serializers.DecimalField(
        max_digits=6, decimal_places=4, min_value=Decimal(0), max_value=Decimal(1), help_text=name
    )


def _seconds() -> serializers.DecimalField:
    return serializers.DecimalField(
        max_digits=10, decimal_places=3, min_value=Decimal(0), max_value=MAX_SECONDS
    )


class WhatIfQuery(StrictSerializer):
    """DRF's DecimalField refuses NaN, infinities and more digits than max_digits; the maxima
    are the dashboard's (accounting.forms), within which the arithmetic always answers."""

    agent_hourly_usd = serializers.DecimalField(
        max_digits=10, decimal_places=4, min_value=Decimal(0), max_value=MAX_AGENT_HOURLY_USD
    )
    baseline_seconds = _seconds()
    use_seconds = _seconds()
    edit_seconds = _seconds()
    ignore_seconds = _seconds()
    use_share = _shares("Share of drafts used as is.")
    edit_share = _shares("Share of drafts edited.")
    ignore_share = _shares("Share of drafts ignored.")
    cost_per_response_usd = serializers.DecimalField(
        max_digits=18, decimal_places=10, min_value=Decimal(0), max_value=MAX_COST_PER_RESPONSE_USD
    )
    messages_per_year = serializers.IntegerField(min_value=0, max_value=MAX_MESSAGES_PER_YEAR)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["use_share"] + attrs["edit_share"] + attrs["ignore_share"] > 1:
            raise serializers.ValidationError(
                {"ignore_share": ["The shares add up to more than 1."]}
            )
        return attrs


def _query_params() -> list[OpenApiParameter]:
    return [
        OpenApiParameter(
            "from", OpenApiTypes.DATE, description="First day (default: this month's 1st)."
        ),
        OpenApiParameter(
            "to", OpenApiTypes.DATE, description="Last day, included (default: today)."
        ),
        OpenApiParameter("group_by", OpenApiTypes.STR, enum=list(GROUP_BY)),
        OpenApiParameter(
            "policy", OpenApiTypes.INT, description="Only this cascade policy's drafts."
        ),
    ]


def _team_scope(team: Team, data: Mapping[str, Any]) -> Scope:
    """The validated period of `team`'s drafts, of one of its policies when asked (another
    team's policy is a field error, as if it did not exist)."""
    policy_ids = None
    if data.get("policy") is not None:
        if not CascadePolicy.objects.filter(pk=data["policy"], team=team).exists():
            raise serializers.ValidationError({"policy": ["No such policy in your team."]})
        policy_ids = (data["policy"],)
    return Scope(
        start=data["from"],
        end=data["to"] + timedelta(days=1),
        team_ids=(team.pk,),
        policy_ids=policy_ids,
    )


class EncsView(APIView):
    permission_classes = [FinanceOrIntegration]

    @extend_schema(
        parameters=_query_params(),
        responses={200: OpenApiTypes.OBJECT},
        summary="ENCS for a period",
        description="Expected Net Cost Savings of the caller's team computed from stored agent "
        "actions and attempt costs: counts, use/edit/ignore shares, handle times, baseline, "
        "labour savings, model cost, ENCS total and per message, the P·S − C decomposition, "
        "savings against the all-paid counterfactual, the agents' wait for drafts (drafts "
        "waited for, seconds, its cost: already inside ENCS, and ENCS if drafts were "
        "instant), optional groups, per-model figures and break-even. Money is a string of "
        "decimals (USD).",
    )
    def get(self, request: Request) -> Response:
        team = request_team(request)
        query = EncsQuery(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        data = query.validated_data
        scope = _team_scope(team, data)
        try:
            report = encs_report(scope, group_by=data.get("group_by"))
        except SettingsMissing as exc:
            raise serializers.ValidationError({"non_field_errors": [str(exc)]}) from exc
        return Response(report)


class WhatIfView(APIView):
    permission_classes = [FinanceOrIntegration]

    @extend_schema(
        parameters=[
            OpenApiParameter(name, OpenApiTypes.NUMBER, required=True)
            for name in WhatIfQuery().get_fields()
        ],
        responses={200: OpenApiTypes.OBJECT},
        summary="What-if ENCS calculator",
        description="The case-study arithmetic of Howell et al.: ENCS per message and per year "
        "from an agent rate, an unaided reply time, action times and shares and a cost per "
        "response, at a yearly volume.",
    )
    def get(self, request: Request) -> Response:
        request_team(request)
        query = WhatIfQuery(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        d = query.validated_data
        return Response(
            whatif(
                agent_hourly_usd=d["agent_hourly_usd"],
                baseline_seconds=d["baseline_seconds"],
                handle_seconds={k: d[f"{k}_seconds"] for k in DRAFTED_KINDS},
                shares={k: d[f"{k}_share"] for k in DRAFTED_KINDS},
                cost_per_response_usd=d["cost_per_response_usd"],
                messages_per_year=d["messages_per_year"],
            ).as_json()
        )


# --- Knowledge: ENCS per article and per macro, stale articles, content gaps ---------------------

KNOWLEDGE_PAGE = 50
KNOWLEDGE_MAX_PAGE = 500


class KnowledgeQuery(EncsQuery):
    """A period and a policy as for /encs (no grouping), and a page of the list."""

    group_by = None  # type: ignore[assignment]
    limit = serializers.IntegerField(required=False, min_value=1, max_value=KNOWLEDGE_MAX_PAGE)
    offset = serializers.IntegerField(required=False, min_value=0)


def _knowledge_params() -> list[OpenApiParameter]:
    return [
        *(p for p in _query_params() if p.name != "group_by"),
        OpenApiParameter(
            "limit", OpenApiTypes.INT, description=f"Page size (default {KNOWLEDGE_PAGE})."
        ),
        OpenApiParameter("offset", OpenApiTypes.INT, description="Rows to skip (default 0)."),
    ]


class KnowledgeList(APIView):
    """One list of the team's knowledge report, a page at a time: `count`, `next`, `previous`
    and `results` as DRF's limit/offset pages, beside the period and the totals."""

    permission_classes = [FinanceOrIntegration]
    part: str = ""

    def rows(self, report: KnowledgeReport) -> list[dict[str, Any]]:
        raise NotImplementedError

    def get(self, request: Request) -> Response:
        team = request_team(request)
        query = KnowledgeQuery(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        data = query.validated_data
        scope = _team_scope(team, data)
        try:
            report = knowledge_report(scope)
        except SettingsMissing as exc:
            raise serializers.ValidationError({"non_field_errors": [str(exc)]}) from exc
        rows = self.rows(report)
        limit = data.get("limit") or KNOWLEDGE_PAGE
        offset = data.get("offset") or 0
        url = request.build_absolute_uri()
        after, before = offset + limit, max(0, offset - limit)
        whole = report.as_json()
        return Response(
            {
                "from": whole["from"],
                "to": whole["to"],
                **{k: whole[k] for k in ("grounded_drafts", "grounded_encs_usd")},
                **{k: whole[k] for k in ("macro_drafts", "macro_encs_usd")},
                "count": len(rows),
                "next": replace_query_param(url, "offset", after) if after < len(rows) else None,
                "previous": replace_query_param(url, "offset", before) if offset else None,
                "results": rows[offset:after],
            }
        )


def _knowledge_schema(summary: str, description: str) -> Any:
    return extend_schema(
        parameters=_knowledge_params(),
        responses={200: OpenApiTypes.OBJECT},
        summary=summary,
        description=description
        + " The caller's team only; money is a string of decimals (USD); a page of `limit` "
        "rows from `offset`, with `count`, `next` and `previous`.",
    )


class ArticleValueView(KnowledgeList):
    @_knowledge_schema(
        "ENCS per article",
        "For each article, the drafts whose shown text cited it: counts, use/edit/ignore, "
        "mean edit distance, and ENCS both unshared (`citing`) and shared (a draft citing n "
        "articles counts 1/n for each, so the articles' `encs_usd` add up to the grounded "
        "drafts' ENCS). Highest shared ENCS first.",
    )
    def get(self, request: Request) -> Response:
        return super().get(request)

    def rows(self, report: KnowledgeReport) -> list[dict[str, Any]]:
        return [a.as_json() for a in report.value.articles]


class MacroValueView(KnowledgeList):
    @_knowledge_schema(
        "ENCS per macro",
        "For each macro, the drafts it wrote (offered at tier 0, at no model cost): counts, "
        "use/edit/ignore, mean edit distance and ENCS. Highest ENCS first.",
    )
    def get(self, request: Request) -> Response:
        return super().get(request)

    def rows(self, report: KnowledgeReport) -> list[dict[str, Any]]:
        return [m.as_json() for m in report.value.macros]


class StaleArticlesView(KnowledgeList):
    @_knowledge_schema(
        "Stale articles",
        "Articles whose drafts agents edit heavily (enough reviewed drafts, and a high mean "
        "edit distance or share of heavy edits), with the version the drafts cited and the "
        "current one. Most heavily edited first.",
    )
    def get(self, request: Request) -> Response:
        return super().get(request)

    def rows(self, report: KnowledgeReport) -> list[dict[str, Any]]:
        return [a.as_json() for a in report.value.stale]


class ContentGapsView(KnowledgeList):
    @_knowledge_schema(
        "Content gaps",
        "Groups of similar customer questions that needed knowledge and found none, or whose "
        "drafts were ignored: counts, how many of each, three example questions and the days "
        "they were asked. Largest groups first: the articles to write next.",
    )
    def get(self, request: Request) -> Response:
        return super().get(request)

    def rows(self, report: KnowledgeReport) -> list[dict[str, Any]]:
        return [g.as_json() for g in report.gaps.groups]


urlpatterns = [
    path("encs", EncsView.as_view(), name="encs"),
    path("encs/whatif", WhatIfView.as_view(), name="encs-whatif"),
    path("encs/knowledge/articles", ArticleValueView.as_view(), name="encs-articles"),
    path("encs/knowledge/macros", MacroValueView.as_view(), name="encs-macros"),
    path("encs/knowledge/stale", StaleArticlesView.as_view(), name="encs-stale-articles"),
    path("encs/knowledge/gaps", ContentGapsView.as_view(), name="encs-content-gaps"),
]
