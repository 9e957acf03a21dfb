"""The confirmation page of a decision in drafting's admin (a distill run's decisions, an
experiment's stop and promote): one template, admin/drafting/confirm.html, so that every such
page has the same breadcrumbs, CSRF-protected POST and way back to the object's page."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest
from django.template.response import TemplateResponse


def confirm_page(
    request: HttpRequest,
    *,
    model_admin: admin.ModelAdmin[Any],
    original: Model,
    title: str,
    evidence_url: str,
    evidence: str,
    paragraphs: Sequence[str],
    submit: str,
    form: forms.Form | None = None,
) -> TemplateResponse:
    """The page asking to confirm a decision on `original` (a GET: nothing changes).

    `title` is the question (the page's title and last breadcrumb); `evidence` is the text of
    the link to `evidence_url`, what to read "before deciding"; `paragraphs` say what the
    decision does (escaped: mark one safe with format_html for markup); `form`, if any, holds
    the choices the decision needs; `submit` labels the button that POSTs it."""
    return TemplateResponse(
        request,
        "admin/drafting/confirm.html",
        {
            **model_admin.admin_site.each_context(request),
            "opts": model_admin.opts,
            "original": original,
            "title": title,
            "evidence_url": evidence_url,
            "evidence": evidence,
            "paragraphs": paragraphs,
            "form": form,
            "submit": submit,
        },
    )
