"""Admin for the knowledge base: articles (with their chunks, read-only, and how many are
embedded), macros, and the "Import files" page (several files or a ZIP into one team, all or
nothing, with every problem listed per file). Writes go through drafting.knowledge, so an
article saved here is re-chunked and indexed exactly as an import or the API would do it.
The admin is for csbot's admins, who configure every team (csbot.admin_site)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import UploadedFile
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from csbot.models import Team
from drafting import knowledge
from drafting.engine.knowledge_files import EXTENSIONS, ArticleInput, MacroInput
from drafting.models import KnowledgeArticle, KnowledgeChunk, Macro


class KnowledgeChunkInline(admin.TabularInline[KnowledgeChunk, KnowledgeArticle]):
    """What retrieval finds: written by the article's saves, never edited by hand."""

    model = KnowledgeChunk
    extra = 0
    fields = ("position", "heading", "text", "embedding_model")
    readonly_fields = ("position", "heading", "text", "embedding_model")
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ArticleForm(forms.ModelForm[KnowledgeArticle]):
    source_url = forms.URLField(max_length=500, required=False, assume_scheme="https")

    class Meta:
        model = KnowledgeArticle
        fields = [
            "team",
            "external_id",
            "title",
            "body",
            "body_format",
            "source_url",
            "tags",
            "language",
            "published",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not self.errors:
            # On a change the id is read-only, so not in the form: the row's own.
            checked = {"external_id": self.instance.external_id, **data}
            for name, problems in knowledge.article_errors(article_input(checked)).items():
                field = "body_format" if name == "format" else name
                self.add_error(field if field in self.fields else None, problems)
        return data


def article_input(data: dict[str, Any]) -> ArticleInput:
    return ArticleInput(
        external_id=data.get("external_id") or "",
        title=data.get("title") or "",
        body=data.get("body") or "",
        body_format=data.get("body_format") or KnowledgeArticle.Format.MARKDOWN,
        tags=tuple(data.get("tags") or ()),
        language=data.get("language") or "",
        source_url=data.get("source_url") or "",
        published=bool(data.get("published")),
    )


@admin.register(KnowledgeArticle)
class KnowledgeArticleAdmin(admin.ModelAdmin[KnowledgeArticle]):
    form = ArticleForm
    list_display = [
        "title",
        "team",
        "external_id",
        "published",
        "language",
        "version",
        "chunk_count",
        "embedded_count",
        "updated_at",
    ]
    list_filter = ["team", "published", "language", "body_format"]
    list_select_related = ["team"]
    search_fields = ["title", "external_id", "body"]
    inlines = [KnowledgeChunkInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[KnowledgeArticle]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                chunks_total=Count("chunks"),
                chunks_embedded=Count("chunks", filter=Q(chunks__embedding__isnull=False)),
            )
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # An article's identity is its team and external id: an edit never moves it.
        fixed = ["version", "created_at", "updated_at"]
        return ["team", "external_id", *fixed] if obj is not None else fixed

    @admin.display(description="chunks", ordering="chunks_total")
    def chunk_count(self, article: KnowledgeArticle) -> int:
        return int(article.chunks_total)  # type: ignore[attr-defined]

    @admin.display(description="embedded", ordering="chunks_embedded")
    def embedded_count(self, article: KnowledgeArticle) -> int:
        return int(article.chunks_embedded)  # type: ignore[attr-defined]

    def save_model(
        self, request: HttpRequest, obj: KnowledgeArticle, form: Any, change: bool
    ) -> None:
        """Through the service: re-chunked, search vectors set, the worker rung."""
        data = {**form.cleaned_data, "team": obj.team, "external_id": obj.external_id}
        result = knowledge.article_upsert(team=obj.team, data=article_input(data))
        obj.pk = result.article.pk
        obj.version = result.article.version

    # "Import files" (the link is in templates/admin/drafting/knowledgearticle/change_list.html).
    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="drafting_knowledgearticle_import",
            ),
            *super().get_urls(),
        ]

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ImportForm(request.POST or None, request.FILES or None)
        report = None
        if request.method == "POST" and form.is_valid():
            team: Team = form.cleaned_data["team"]
            uploads: list[UploadedFile] = form.cleaned_data["uploads"]
            report = knowledge.knowledge_import(
                team=team, files=[(upload.name or "upload", upload.read()) for upload in uploads]
            )
            if report.ok:
                outcome = knowledge.Outcome
                messages.success(
                    request,
                    f"{team}: {report.total(outcome.CREATED)} created, "
                    f"{report.total(outcome.UPDATED)} updated, "
                    f"{report.total(outcome.UNCHANGED)} unchanged. New passages are found by "
                    "text now and by meaning once the worker has embedded them.",
                )
            else:
                messages.error(
                    request,
                    f"{len(report.errors)} problem(s): nothing was imported. Fix the files and "
                    "upload them again.",
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import knowledge files",
            "form": form,
            "report": report,
            "extensions": ", ".join(EXTENSIONS),
            "max_bytes": settings.KNOWLEDGE_IMPORT_MAX_BYTES,
        }
        return TemplateResponse(request, "admin/drafting/knowledgearticle/import.html", context)


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files in one field (Django's documented way): a list of them, each checked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[Any]:
        items = data if isinstance(data, list | tuple) else [data]
        return [super(MultipleFileField, self).clean(item, initial) for item in items]


class ImportForm(forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.order_by("name"))
    uploads = MultipleFileField(
        label="Files", help_text="Several files, or a ZIP of them (folders are fine)."
    )

    def clean_uploads(self) -> list[UploadedFile]:
        files: list[UploadedFile] = self.cleaned_data["uploads"]
        limit = settings.KNOWLEDGE_IMPORT_MAX_BYTES
        too_big = [f.name for f in files if (f.size or 0) > limit]
        if too_big:
            # Refused before reading: nothing over the limit is held in memory.
            raise forms.ValidationError(
                f"Larger than {limit} bytes (KNOWLEDGE_IMPORT_MAX_BYTES): {', '.join(map(str, too_big))}."
            )
        return files


class MacroForm(forms.ModelForm[Macro]):
    class Meta:
        model = Macro
        fields = ["team", "external_id", "title", "body", "tags", "language", "intent", "active"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        team = data.get("team") or (self.instance.team if self.instance.pk else None)
        intent = data.get("intent")
        if intent is not None and team is not None and intent.team_id != team.pk:
            self.add_error("intent", "Pick one of the macro's team's intents.")
        if not self.errors:
            checked = {"external_id": self.instance.external_id, **data}
            for name, problems in knowledge.macro_errors(macro_input(checked)).items():
                self.add_error(name if name in self.fields else None, problems)
        return data


def macro_input(data: dict[str, Any]) -> MacroInput:
    intent = data.get("intent")
    return MacroInput(
        external_id=data.get("external_id") or "",
        title=data.get("title") or "",
        body=data.get("body") or "",
        tags=tuple(data.get("tags") or ()),
        intent=intent.name if intent is not None else "",
        language=data.get("language") or "",
        active=bool(data.get("active")),
    )


@admin.register(Macro)
class MacroAdmin(admin.ModelAdmin[Macro]):
    form = MacroForm
    list_display = ["title", "team", "external_id", "intent", "active", "embedded", "updated_at"]
    list_filter = ["team", "active"]
    list_select_related = ["team", "intent"]
    search_fields = ["title", "external_id", "body"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fixed = ["created_at", "updated_at"]
        return ["team", "external_id", *fixed] if obj is not None else fixed

    @admin.display(description="embedded", boolean=True)
    def embedded(self, macro: Macro) -> bool:
        return bool(macro.embedding_model)

    def save_model(self, request: HttpRequest, obj: Macro, form: Any, change: bool) -> None:
        data = {**form.cleaned_data, "external_id": obj.external_id}
        result = knowledge.macro_upsert(team=obj.team, data=macro_input(data))
        obj.pk = result.macro.pk
