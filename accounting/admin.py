from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import FileResponse, Http404, HttpRequest
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from accounting.models import AccountingSettings, FixedCost, MonthlyReport
from csbot.admin_records import RecordAdmin


@admin.register(AccountingSettings)
class AccountingSettingsAdmin(admin.ModelAdmin[AccountingSettings]):
    list_display = [
        "team",
        "effective_from",
        "agent_hourly_usd",
        "default_baseline_seconds",
        "min_holdout_sample",
        "note",
    ]
    list_filter = ["team"]
    list_select_related = ["team"]
    save_as = True  # a change is a new dated row: "Save as new" keeps the history


@admin.register(FixedCost)
class FixedCostAdmin(admin.ModelAdmin[FixedCost]):
    list_display = ["name", "kind", "amount_usd", "policy", "endpoint", "starts_on", "ends_on"]
    list_filter = ["kind"]
    list_select_related = ["policy", "endpoint"]


@admin.register(MonthlyReport)
class MonthlyReportAdmin(RecordAdmin, admin.ModelAdmin[MonthlyReport]):
    list_display = ["month", "team", "generated_at", "downloads"]
    list_filter = ["team"]
    list_select_related = ["team"]
    readonly_fields = ["team", "month", "figures", "generated_at", "emailed_to", "downloads"]
    exclude = ["html", "pdf", "csv"]

    @admin.display(description="files")
    def downloads(self, report: MonthlyReport) -> str:
        links = [
            (kind, reverse("admin:accounting_monthlyreport_file", args=[report.pk, kind]))
            for kind in ("html", "pdf", "csv")
        ]
        return format_html(
            " · ".join(['<a href="{}">{}</a>'] * len(links)),
            *(part for kind, url in links for part in (url, kind.upper())),
        )

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<int:pk>/file/<str:kind>/",
                self.admin_site.admin_view(self.file_view),
                name="accounting_monthlyreport_file",
            ),
            *super().get_urls(),
        ]

    def file_view(self, request: HttpRequest, pk: int, kind: str) -> Any:
        report = MonthlyReport.objects.filter(pk=pk).first()
        if report is None or kind not in ("html", "pdf", "csv"):
            raise Http404
        if not self.has_view_permission(request, report):
            raise Http404
        stored = getattr(report, kind)
        return FileResponse(
            stored.open("rb"),
            as_attachment=kind != "html",
            filename=stored.name.rsplit("/", 1)[-1],
        )
