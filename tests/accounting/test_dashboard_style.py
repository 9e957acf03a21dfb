"""What a new user saw on the ENCS dashboard (issue 17): the what-if form's inputs written as
plain decimals (never "3E+1"), and every chart drawn at one scale and in one type scheme, so no
chart looms over the others."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from html.parser import HTMLParser

import pytest
from django.test import Client

from accounting import charts
from accounting.models import FixedCost
from drafting.models import Intent
from tests.accounting.factories import Books, attempt, drafted, make_books

OCTOBER = {"from": "2026-10-01", "to": "2026-10-31"}
DAY = date(2026, 10, 5)


@pytest.fixture
def books(db: None) -> Books:
    """A day of drafts with round figures (a $36/h rate, 30 s and 120 s handle times: what
    `Decimal.normalize()` writes as 3.6E+1, 3E+1, 1.2E+2), two intents and a fixed cost, so the
    dashboard draws every chart it has."""
    books = make_books()
    billing = Intent.objects.create(team=books.team, name="billing")
    shipping = Intent.objects.create(team=books.team, name="shipping")
    for kind, handle, intent in (
        ("use", "30", billing),
        ("use", "30", shipping),
        ("edit", "120", billing),
        ("ignore", "200", shipping),
    ):
        draft = drafted(
            books.policy,
            kind=kind,
            handle=handle,
            cost="0.002",
            endpoint=books.local,
            day=DAY,
            intent=intent,
        )
        attempt(draft, tier=1, cost="0.002", endpoint=books.local)
    FixedCost.objects.create(
        name="GPU", kind="monthly", amount_usd=Decimal(1), policy=books.policy, starts_on=DAY
    )
    return books


def dashboard(client: Client, books: Books) -> str:
    client.force_login(books.users["manager"])
    response = client.get("/accounting/", OCTOBER)
    assert response.status_code == 200
    return response.content.decode()


def test_whatif_inputs_show_plain_decimals_never_an_exponent(client: Client, books: Books) -> None:
    html = dashboard(client, books)
    whatif = html[html.index('id="whatif"') :]
    values = dict(re.findall(r'<input type="number" name="w-([a-z_]+)" value="([^"]*)"', whatif))
    assert set(values) >= {"agent_hourly_usd", "baseline_seconds", "use_seconds", "edit_pct"}
    assert not [v for v in values.values() if "e" in v.lower()], values
    assert values["agent_hourly_usd"] == "36"
    assert values["use_seconds"] == "30"
    assert values["edit_seconds"] == "120"


def test_whatif_panel_alone_shows_what_was_typed(client: Client, books: Books) -> None:
    client.force_login(books.users["manager"])
    html = client.get("/accounting/whatif", {"w-agent_hourly_usd": "40.50"}).content.decode()
    assert 'name="w-agent_hourly_usd" value="40.50"' in html


@dataclass
class Chart:
    name: str
    view_width: float
    columns: int  # grid columns its card spans: 2 for a full-width card, 1 for a half one
    font_sizes: set[float] = field(default_factory=set)


class _ChartFinder(HTMLParser):
    """Each `<svg class="chart …">` of a page with the width of the card it sits in (a card in
    `.grid` without `span-2` is half the page; any other card is the whole page) and the font
    sizes its text uses."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[set[str]] = []
        self.charts: list[Chart] = []
        self.open_chart: Chart | None = None
        self.chart_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = set((attributes.get("class") or "").split())
        self.stack.append(classes)
        if tag == "svg" and "chart" in classes:
            card = next(i for i in range(len(self.stack) - 1, -1, -1) if "card" in self.stack[i])
            in_grid = card > 0 and "grid" in self.stack[card - 1]
            half = in_grid and "span-2" not in self.stack[card]
            name = next(c for c in classes if c.startswith("chart-"))
            self.open_chart = Chart(
                name=name,
                view_width=float((attributes["viewbox"] or "").split()[2]),
                columns=1 if half else 2,
            )
            self.charts.append(self.open_chart)
            self.chart_depth = len(self.stack)
        elif self.open_chart is not None:
            style = attributes.get("style") or ""
            self.open_chart.font_sizes |= {
                float(size) for size in re.findall(r"font-size: ([0-9.]+)px", style)
            }

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.open_chart is not None and len(self.stack) == self.chart_depth:
            self.open_chart = None
        if self.stack:
            self.stack.pop()


def test_every_dashboard_chart_is_shown_at_one_scale_in_one_type_scheme(
    client: Client, books: Books
) -> None:
    finder = _ChartFinder()
    finder.feed(dashboard(client, books))
    found = {chart.name for chart in finder.charts}
    assert found >= {
        "chart-timeline",
        "chart-shares",
        "chart-tiers",
        "chart-models",
        "chart-intents",
        f"chart-breakeven-policy-{books.policy.pk}",
    }
    # The page stretches each chart to its card: drawn at its card's width, every chart is
    # shown at the same scale (a half card's chart at half a full card's width, less the gap).
    assert {c.view_width for c in finder.charts if c.columns == 1} == {charts.SCREEN_HALF * 72}
    assert {c.view_width for c in finder.charts if c.columns == 2} == {charts.SCREEN_WIDE * 72}
    # One type scale: every chart's text is in the shared sizes, its ticks at the text size.
    for chart in finder.charts:
        assert chart.font_sizes <= set(charts.FONT_SIZES), (chart.name, chart.font_sizes)
        assert charts.TEXT_PT in chart.font_sizes, chart
