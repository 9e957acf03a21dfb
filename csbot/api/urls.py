from __future__ import annotations

from django.urls import path

from csbot.api import views

app_name = "api"

urlpatterns = [
    path("messages", views.MessageIngestView.as_view(), name="message-ingest"),
    path("messages/<int:pk>", views.MessageDetailView.as_view(), name="message-detail"),
    path("conversations", views.ConversationListView.as_view(), name="conversation-list"),
    path(
        "conversations/<int:pk>", views.ConversationDetailView.as_view(), name="conversation-detail"
    ),
    path(
        "conversations/<int:pk>/messages",
        views.ConversationMessagesView.as_view(),
        name="conversation-messages",
    ),
    path("drafts/<int:pk>", views.DraftDetailView.as_view(), name="draft-detail"),
    path("drafts/<int:pk>/action", views.DraftActionView.as_view(), name="draft-action"),
    # External ids may hold slashes (an imported file's path): `path`, not `str`.
    path(
        "knowledge/articles",
        views.KnowledgeArticleListView.as_view(),
        name="knowledge-article-list",
    ),
    path(
        "knowledge/articles/<path:external_id>",
        views.KnowledgeArticleDetailView.as_view(),
        name="knowledge-article-detail",
    ),
    path("knowledge/macros", views.KnowledgeMacroListView.as_view(), name="knowledge-macro-list"),
    path(
        "knowledge/macros/<path:external_id>",
        views.KnowledgeMacroDetailView.as_view(),
        name="knowledge-macro-detail",
    ),
]
