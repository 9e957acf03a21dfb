"""The ENCS dashboard and its printable report: who may see what, that the page shows
exactly what `encs_report` computes, the what-if calculator, the charts, the HTML and PDF
downloads, and a statement count that does not grow with the data."""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounting import charts
from accounting.dashboard import tier_costs
from accounting.engine import whatif
from accounting.facts import Scope
from accounting.models import FixedCost
from accounting.rendering import report_html, usd
from accounting.selectors import encs_figures, encs_report
from tests.accounting.factories import Books, attempt, drafted, make_books
from tests.factories import (
    WHATIF_FORM_PAPER_CASE,
    AgentProfileFactory,
    DraftAttemptFactory,
    EndpointFactory,
    PolicyFactory,
    TeamFactory,
)

OCTOBER = {"from": "2026-10-01", "to": "2026-10-31"}
DAY = date(2026, 10, 5)


def seed_day(books: Books, day: date, *, agent: Any = None) -> None:
    """One day of the team's drafts, every path a draft can take, with its attempts:
    used (local tier), edited (escalated to the paid tier), ignored, a cache hit, a failed
    draft nobody answered, and two held-out replies."""
    policy, local, paid = books.policy, books.local, books.paid
    used = drafted(
        policy,
        kind="use",
        handle="30",
        cost="0.002",
        counterfactual="0.010",
        endpoint=local,
        day=day,
        agent=agent,
    )
    attempt(used, tier=1, cost="0.002", endpoint=local)
    edited = drafted(
        policy,
        kind="edit",
        handle="60",
        cost="0.004",
        counterfactual="0.012",
        endpoint=paid,
        day=day,
        agent=agent,
    )
    attempt(edited, tier=1, cost="0.001", endpoint=local)
    attempt(edited, tier=2, cost="0.003", endpoint=paid)
    ignored = drafted(
        policy,
        kind="ignore",
        handle="150",
        cost="0.001",
        counterfactual="0.009",
        endpoint=local,
        day=day,
        agent=agent,
    )
    attempt(ignored, tier=1, cost="0.001", endpoint=local)
    cached = drafted(policy, kind="use", handle="20", day=day, agent=agent)
    attempt(cached, tier=0, cost="0")
    failed = drafted(policy, kind=None, cost="0.003", day=day)
    attempt(failed, tier=1, cost="0.003", endpoint=local, ok=False)
    drafted(policy, kind="held_out", handle="100", day=day, agent=agent)
    drafted(policy, kind="held_out", handle="140", day=day, agent=agent)


@pytest.fixture
def books(db: None) -> Books:
    books = make_books()
    seed_day(books, DAY)
    # The other team's drafts: never on the first team's pages.
    other = drafted(books.other_policy, kind="use", handle="10", cost="0.5", day=DAY)
    attempt(other, tier=1, cost="0.5", endpoint=books.paid)
    return books


def as_user(client: Client, books: Books, who: str) -> Client:
    client.force_login(books.users[who])
    return client


def kpi(html: str, key: str) -> str:
    match = re.search(rf'data-kpi="{key}" data-value="([^"]*)"', html)
    assert match, f"no KPI {key} on the page"
    return match.group(1)


def team_scope(books: Books) -> Scope:
    return Scope(start=date(2026, 10, 1), end=date(2026, 11, 1), team_ids=(books.team.pk,))


# --- Who sees what ----------------------------------------------------------------------------


def get_as(client: Client, books: Books, page: str, who: str | None, query: dict[str, str]) -> Any:
    """GET `page` for October as `who` (None: anonymous); `query` names ids symbolically:
    team own/other/nonsense, policy other."""
    if who is not None:
        as_user(client, books, who)
    ids = {"own": str(books.team.pk), "other": str(books.other_team.pk), "nonsense": "abc"}
    params = {**OCTOBER}
    for key, value in query.items():
        params[key] = str(books.other_policy.pk) if key == "policy" else ids[value]
    return client.get(page, params)


@pytest.mark.parametrize(
    ("who", "query", "status"),
    [
        (None, {}, 302),
        ("agent", {}, 403),
        ("manager", {}, 200),
        ("admin", {}, 200),
        ("superuser", {}, 200),
        ("manager", {"team": "other"}, 404),
        ("admin", {"team": "other"}, 404),
        ("manager", {"policy": "other"}, 404),
        ("manager", {"team": "nonsense"}, 404),
        ("manager", {"team": "own"}, 200),
        ("superuser", {"team": "other"}, 200),
        ("other-manager", {"team": "own"}, 404),
    ],
)
def test_who_may_see_which_team(
    client: Client, books: Books, who: str | None, query: dict[str, str], status: int
) -> None:
    response = get_as(client, books, "/accounting/", who, query)
    assert response.status_code == status
    if status == 302:
        assert response["Location"].startswith("/login/")


@pytest.mark.parametrize(
    ("who", "query", "status"),
    [
        (None, {}, 302),
        ("agent", {}, 403),
        ("manager", {"team": "other"}, 404),
        ("admin", {"policy": "other"}, 404),
        ("manager", {"team": "own"}, 200),
    ],
)
@pytest.mark.parametrize("page", ["/accounting/report.html", "/accounting/report.pdf"])
def test_the_reports_follow_the_same_rules(
    client: Client, books: Books, who: str | None, query: dict[str, str], status: int, page: str
) -> None:
    response = get_as(client, books, page, who, query)
    assert response.status_code == status


def test_the_whatif_panel_is_for_managers_too(client: Client, books: Books) -> None:
    assert client.get("/accounting/whatif").status_code == 302
    assert as_user(client, books, "agent").get("/accounting/whatif").status_code == 403


# --- What the page shows ----------------------------------------------------------------------


def test_the_page_shows_the_figures_encs_report_computes(client: Client, books: Books) -> None:
    report = encs_report(team_scope(books), group_by="day")
    response = as_user(client, books, "manager").get("/accounting/", OCTOBER)
    html = response.content.decode()
    for key in (
        "encs_usd",
        "encs_per_message_usd",
        "labor_savings_usd",
        "model_cost_usd",
        "cascade_savings_usd",
        "baseline_seconds",
    ):
        assert kpi(html, key) == report[key], key
    # Shown as people read them, too.
    assert usd(Decimal(report["encs_usd"])) in html
    assert usd(Decimal(report["encs_per_message_usd"]), 4) in html
    for kind in ("use", "edit", "ignore"):
        assert f'data-kind="{kind}" data-share="{report["shares"][kind]}"' in html
    # The baseline with its source and sample: 2 held-out replies, 3 needed, so the default.
    assert report["baseline_source"] == "default"
    assert "configured default (2 of 3 held-out replies" in html
    # Per model: every model's ENCS, in the table.
    for group in report["by_model"]:
        assert f'data-encs="{group["encs_usd"]}"' in html
    assert {g["group"] for g in report["by_model"]} == {
        "local-small",
        "paid-large",
        "cache",
        "no draft",
    }
    # The other team's $0.50 draft is nowhere: the all-teams figure differs.
    everyone = encs_report(Scope(start=date(2026, 10, 1), end=date(2026, 11, 1)))
    assert everyone["model_cost_usd"] != report["model_cost_usd"]
    assert kpi(html, "model_cost_usd") == report["model_cost_usd"]


def test_a_superuser_sees_every_team_or_picks_one(client: Client, books: Books) -> None:
    as_user(client, books, "superuser")
    html = client.get("/accounting/", OCTOBER).content.decode()
    everyone = encs_report(Scope(start=date(2026, 10, 1), end=date(2026, 11, 1)))
    assert kpi(html, "encs_usd") == everyone["encs_usd"]
    assert "All teams" in html
    html = client.get("/accounting/", {**OCTOBER, "team": str(books.team.pk)}).content.decode()
    assert kpi(html, "encs_usd") == encs_report(team_scope(books))["encs_usd"]


def test_a_policy_filter_narrows_the_figures(client: Client, books: Books) -> None:
    second = PolicyFactory.create(team=books.team, name="Hand second", active=False)
    drafted(second, kind="use", handle="0", cost="0.25", day=DAY)
    as_user(client, books, "manager")
    all_policies = kpi(client.get("/accounting/", OCTOBER).content.decode(), "model_cost_usd")
    only_first = kpi(
        client.get("/accounting/", {**OCTOBER, "policy": str(books.policy.pk)}).content.decode(),
        "model_cost_usd",
    )
    assert Decimal(all_policies) - Decimal(only_first) == Decimal("0.25")


def test_the_default_period_is_this_month(client: Client, books: Books) -> None:
    today = date.today()
    response = as_user(client, books, "manager").get("/accounting/")
    report = response.context["report"]
    assert report.start == today.replace(day=1)
    assert report.last.month == today.month
    assert (report.last + timedelta(days=1)).day == 1
    assert f'value="{today.replace(day=1).isoformat()}"' in response.content.decode()


def test_a_period_that_ends_before_it_starts_is_refused(client: Client, books: Books) -> None:
    response = as_user(client, books, "manager").get(
        "/accounting/", {"from": "2026-10-10", "to": "2026-10-01"}
    )
    assert response.status_code == 400
    assert "The period ends before it starts." in response.content.decode()


def test_htmx_gets_the_filter_errors_in_a_response_it_swaps(client: Client, books: Books) -> None:
    response = as_user(client, books, "manager").get(
        "/accounting/", {"from": "2026-10-10", "to": "2026-10-01"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert "The period ends before it starts." in response.content.decode()


def test_without_an_agent_rate_the_page_says_what_to_configure(client: Client, db: None) -> None:
    team = TeamFactory.create(name="Unpriced")
    policy = PolicyFactory.create(team=team)
    drafted(policy, kind="use", handle="10", day=DAY)
    manager = AgentProfileFactory.create(team=team, role="manager").user
    client.force_login(manager)
    response = client.get("/accounting/", OCTOBER)
    assert response.status_code == 200
    assert "No accounting settings in force" in response.content.decode()
    assert client.get("/accounting/report.pdf", OCTOBER).status_code == 409


# --- Cost by tier and charts ------------------------------------------------------------------


def test_cost_by_tier_sums_the_attempts_of_the_scope(books: Books) -> None:
    rows = tier_costs(team_scope(books))
    assert [(r.label, r.attempts, r.ok, r.cost_usd) for r in rows] == [
        ("Cache", 1, 1, Decimal(0)),
        ("Tier 1", 4, 3, Decimal("0.007")),
        ("Tier 2", 1, 1, Decimal("0.003")),
    ]
    # Attempts and drafts are two records of the same money.
    report = encs_report(team_scope(books))
    assert sum(r.cost_usd for r in rows) == Decimal(report["model_cost_usd"])
    everyone = tier_costs(Scope(start=date(2026, 10, 1), end=date(2026, 11, 1)))
    assert everyone[1].cost_usd == Decimal("0.507")


def test_exploratory_attempts_are_a_row_of_their_own(books: Books) -> None:
    draft = books.policy.drafts.filter(attempts__tier=1).first()
    assert draft is not None
    DraftAttemptFactory.create(
        draft=draft, tier=2, exploratory=True, cost=Decimal("0.02"), text="Tier 2's answer"
    )
    rows = tier_costs(team_scope(books))
    assert [(r.label, r.attempts, r.cost_usd) for r in rows] == [
        ("Cache", 1, Decimal(0)),
        ("Tier 1", 4, Decimal("0.007")),
        ("Tier 2", 1, Decimal("0.003")),
        ("Tier 2 (exploration)", 1, Decimal("0.02")),
    ]


def test_the_dashboard_draws_every_chart(client: Client, books: Books) -> None:
    FixedCost.objects.create(
        name="GPU", kind="monthly", amount_usd=Decimal(1), policy=books.policy, starts_on=DAY
    )
    html = as_user(client, books, "manager").get("/accounting/", OCTOBER).content.decode()
    for name in ("timeline", "shares", "tiers", "models", f"breakeven-policy-{books.policy.pk}"):
        assert re.search(rf'<svg class="chart chart-{name}" role="img" aria-label="[^"]+"', html), (
            name
        )
    assert "No fixed costs recorded" not in html
    assert "Policy Hand default: break-even" in html


def test_charts_are_deterministic_and_carry_no_date(books: Books) -> None:
    report = encs_figures(team_scope(books), group_by="day")
    first = [
        charts.encs_over_time(report),
        charts.action_shares(report),
        charts.encs_by_model(report.by_model),
    ]
    again = [
        charts.encs_over_time(report),
        charts.action_shares(report),
        charts.encs_by_model(report.by_model),
    ]
    assert first == again
    for svg in first:
        assert svg.startswith("<svg ") and svg.rstrip().endswith("</svg>")
        assert "<metadata" not in svg and "2026-" not in svg.split(">", 1)[0]
    # Ids are scoped per chart, so several charts share a page without clashes.
    ids = [set(re.findall(r'id="([^"]+)"', svg)) for svg in first]
    assert not ids[0] & ids[1] and not ids[1] & ids[2]


def test_chart_labels_are_escaped(books: Books) -> None:
    books.local.name = "<script>alert(1)</script>"
    books.local.save(update_fields=["name"])
    report = encs_figures(team_scope(books), group_by="day")
    svg = charts.encs_by_model(report.by_model) + charts.action_shares(report)
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_an_empty_period_draws_placeholders_not_errors(client: Client, books: Books) -> None:
    response = as_user(client, books, "manager").get(
        "/accounting/", {"from": "2026-02-01", "to": "2026-02-28"}
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "No drafts in this period." in html
    assert (
        kpi(html, "encs_usd")
        == encs_report(
            Scope(start=date(2026, 2, 1), end=date(2026, 3, 1), team_ids=(books.team.pk,))
        )["encs_usd"]
    )


# --- What-if ------------------------------------------------------------------------------------


def whatif_params(**overrides: str) -> dict[str, str]:
    params = dict(WHATIF_FORM_PAPER_CASE)
    params.update({f"w-{k}": v for k, v in overrides.items()})
    return params


def test_whatif_shows_the_engine_result_for_the_submitted_figures(
    client: Client, books: Books
) -> None:
    expected = whatif(
        agent_hourly_usd=Decimal(36),
        baseline_seconds=Decimal(120),
        handle_seconds={"use": Decimal(30), "edit": Decimal(60), "ignore": Decimal(150)},
        shares={"use": Decimal("0.5"), "edit": Decimal("0.3"), "ignore": Decimal("0.2")},
        cost_per_response_usd=Decimal("0.011"),
        messages_per_year=500_000,
    )
    as_user(client, books, "manager")
    # The htmx panel and the plain form (the whole dashboard) give the same result.
    for url in ("/accounting/whatif", "/accounting/"):
        response = client.get(url, {**OCTOBER, **whatif_params()})
        assert response.status_code == 200
        html = response.content.decode()
        assert f'data-value="{expected.as_json()["encs_per_message_usd"]}"' in html
        assert f'data-value="{expected.as_json()["encs_per_year_usd"]}"' in html
        assert "$0.5590" in html and "$279,500" in html


def test_whatif_defaults_are_the_period_figures(client: Client, books: Books) -> None:
    report = encs_report(team_scope(books), group_by="day")
    response = as_user(client, books, "manager").get("/accounting/", OCTOBER)
    form = response.context["whatif_form"]
    assert form.data["w-agent_hourly_usd"] == Decimal(36)
    assert form.data["w-use_pct"] == Decimal("40.00")  # 2 used of 5 drafts (held-out: none)
    # The period's own figures give back its ENCS per draft (Howell's decomposition).
    result = response.context["whatif"]
    assert Decimal(result["encs_per_message_usd"]) == pytest.approx(
        Decimal(report["decomposition"]["encs_per_draft_usd"]), abs=Decimal("0.0001")
    )


def test_whatif_refuses_shares_over_100_percent(client: Client, books: Books) -> None:
    response = as_user(client, books, "manager").get(
        "/accounting/whatif", whatif_params(use_pct="80", edit_pct="30")
    )
    assert response.status_code == 200
    assert "add up to more than 100" in response.content.decode()
    assert response.context["whatif"] is None


# --- The report -----------------------------------------------------------------------------------


def test_report_html_is_a_standalone_document(client: Client, books: Books) -> None:
    response = as_user(client, books, "manager").get("/accounting/report.html", OCTOBER)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert 'filename="encs-2026-10.html"' in response["Content-Disposition"]
    html = response.content.decode()
    assert "<title>ENCS report, October 2026 — Hand</title>" in html
    assert "<link" not in html and "<script" not in html  # nothing to fetch: stored, e-mailed
    assert html.count('<svg class="chart') >= 4
    report = encs_report(team_scope(books), group_by="day")
    assert kpi(html, "encs_usd") == report["encs_usd"]
    assert usd(Decimal(report["decomposition"]["encs_per_draft_usd"]), 4) in html


def test_report_html_shows_other_groupings_as_a_table(books: Books) -> None:
    report = encs_figures(team_scope(books), group_by="agent")
    html = report_html(report, title="By agent")
    assert "<h2>By agent</h2>" in html
    assert "Not grouped by day or month in this report." in html


def test_report_pdf_downloads(client: Client, books: Books) -> None:
    response = as_user(client, books, "admin").get("/accounting/report.pdf", OCTOBER)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'attachment; filename="encs-2026-10.pdf"'
    assert response.content.startswith(b"%PDF")
    assert len(response.content) > 10_000


# --- Cost of the page -----------------------------------------------------------------------------


def count_queries(client: Client, params: dict[str, str]) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/accounting/", params)
    assert response.status_code == 200
    return len(queries)


def test_the_dashboard_runs_the_same_statements_whatever_the_data(
    client: Client, books: Books
) -> None:
    FixedCost.objects.create(
        name="GPU", kind="monthly", amount_usd=Decimal(1), policy=books.policy, starts_on=DAY
    )
    as_user(client, books, "manager")
    few = count_queries(client, OCTOBER)
    third = EndpointFactory.create(name="third")
    for offset in range(1, 8):
        seed_day(books, DAY + timedelta(days=offset), agent=books.users["agent"])
        extra = drafted(books.policy, kind="use", handle="5", endpoint=third, day=DAY)
        attempt(extra, tier=3, cost="0.01", endpoint=third)
    many = count_queries(client, OCTOBER)
    assert many == few
    # 28 today: 24 for the ENCS figures (break-even reads its own facts), 4 for the knowledge
    # section (agent rates, cited articles, macro drafts, content gaps); 1 for the waits, 1 for
    # the withheld drafts (a second only when a decided draft was shown).
    assert few <= 30


# --- Odd input: a form error, never a server error ------------------------------------------------


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999999", "sNaN"])
def test_whatif_answers_non_finite_or_huge_numbers_without_a_server_error(
    client: Client, books: Books, value: str
) -> None:
    as_user(client, books, "manager")
    # The measured figure rides along in a hidden field: not a number, nothing to compare.
    carried = client.get("/accounting/whatif", {**whatif_params(), "measured": value})
    assert carried.status_code == 200
    assert carried.context["measured"] is None
    assert carried.context["whatif"] is not None
    # A figure of the calculator itself: the field says what is wrong.
    for url in ("/accounting/whatif", "/accounting/"):
        response = client.get(url, {**OCTOBER, **whatif_params(agent_hourly_usd=value)})
        assert response.status_code == 200
        assert response.context["whatif"] is None
        assert response.context["whatif_form"].errors["agent_hourly_usd"]


def test_whatif_at_the_largest_figures_it_accepts_still_answers(
    client: Client, books: Books
) -> None:
    """ENCS per year at the form's maxima keeps its ten decimal places: the arithmetic does
    not overflow Decimal's precision (a server error before the maxima were set)."""
    largest = whatif_params(
        agent_hourly_usd="10000",
        baseline_seconds="86400",
        use_seconds="0",
        edit_seconds="0",
        ignore_seconds="0",
        use_pct="100",
        edit_pct="0",
        ignore_pct="0",
        cost_per_response_usd="0",
        messages_per_year=str(10**10),
    )
    response = as_user(client, books, "manager").get("/accounting/whatif", largest)
    assert response.status_code == 200
    assert response.context["whatif"]["encs_per_year_usd"] == "2400000000000000.0000000000"
    beyond = {**largest, "w-agent_hourly_usd": "10000.01"}
    refused = client.get("/accounting/whatif", beyond)
    assert refused.context["whatif_form"].errors["agent_hourly_usd"]


@pytest.mark.parametrize(
    "period",
    [
        {"from": "9999-12-31", "to": "9999-12-31"},
        {"from": "9999-12-01", "to": "9999-12-31"},
        {"from": "0001-01-01", "to": "0001-01-31"},
    ],
)
@pytest.mark.parametrize(
    "page", ["/accounting/", "/accounting/report.html", "/accounting/report.pdf"]
)
def test_a_period_at_the_ends_of_the_calendar_is_a_clear_400(
    client: Client, books: Books, period: dict[str, str], page: str
) -> None:
    response = as_user(client, books, "manager").get(page, period)
    assert response.status_code == 400
    assert any(
        phrase in response.content.decode()
        for phrase in ("greater than or equal to 1970-01-01", "less than or equal to 9998-12-31")
    )


def test_the_last_reportable_day_is_reported(client: Client, books: Books) -> None:
    response = as_user(client, books, "manager").get(
        "/accounting/report.html", {"from": "9998-12-01", "to": "9998-12-31"}
    )
    assert response.status_code == 200
