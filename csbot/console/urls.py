from __future__ import annotations

from django.urls import path

from csbot.console import composer, views
from csbot.console.streaming import draft_stream

app_name = "console"

urlpatterns = [
    path("", views.queue, name="queue"),
    path("c/<int:pk>", views.conversation, name="conversation"),
    path("c/<int:pk>/draft", views.draft_panel, name="draft-panel"),
    path("c/<int:pk>/draft/stream", draft_stream, name="draft-stream"),
    path("c/<int:pk>/reply", views.reply, name="reply"),
    path("c/<int:pk>/close", views.close, name="close"),
    path("c/<int:pk>/claim", views.claim, name="claim"),
    path("c/<int:pk>/take-over", views.take_over, name="take-over"),
    path("c/<int:pk>/release", views.release, name="release"),
    path("c/<int:pk>/intent", views.intent, name="intent"),
    path("c/<int:pk>/compose", composer.compose, name="compose"),
    path("c/<int:pk>/insert", views.insert_search, name="insert-search"),
    path("c/<int:pk>/insert/macro/<int:macro_id>", views.insert_macro, name="insert-macro"),
    path("c/<int:pk>/insert/article/<int:article_id>", views.insert_article, name="insert-article"),
    path("articles/<int:pk>", views.article, name="article"),
]
