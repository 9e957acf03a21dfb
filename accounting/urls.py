from __future__ import annotations

from django.urls import path

from accounting import experiment_views, views

app_name = "accounting"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("whatif", views.whatif, name="whatif"),
    path("report.html", views.report_as_html, name="report-html"),
    path("report.pdf", views.report_as_pdf, name="report-pdf"),
    path("experiments", experiment_views.experiments, name="experiments"),
]
