"""Celery tasks: doorbells only. Ids in, the services do the work from the database row."""

from __future__ import annotations

from celery import shared_task

from drafting import adapters, knowledge, services
from drafting.learning import intents


@shared_task(name="drafting.tasks.draft_generate", ignore_result=True)
def draft_generate_task(draft_id: int) -> None:
    services.draft_generate(draft_id=draft_id)
    # After the draft is stored: the intent is for routing and reports, never worth a slower
    # or failed draft.
    intents.draft_intent_classify(draft_id=draft_id)


@shared_task(name="drafting.tasks.draft_explore", ignore_result=True)
def draft_explore_task(draft_id: int) -> int:
    return services.draft_explore(draft_id=draft_id)


@shared_task(name="drafting.tasks.draft_shadow", ignore_result=True)
def draft_shadow_task(draft_id: int, run_id: int) -> bool:
    return adapters.draft_shadow(draft_id=draft_id, run_id=run_id)


@shared_task(name="drafting.tasks.drafts_sweep", ignore_result=True)
def drafts_sweep_task() -> dict[str, int]:
    result = services.drafts_sweep()
    return {"requeued": result.requeued, "reclaimed": result.reclaimed, "expired": result.expired}


@shared_task(name="drafting.tasks.reply_remember", ignore_result=True)
def reply_remember_task(action_id: int) -> None:
    services.reply_remember(action_id=action_id)


@shared_task(name="drafting.tasks.vectors_reembed", ignore_result=True)
def vectors_reembed_task() -> int:
    return services.vectors_reembed_stale()


@shared_task(name="drafting.tasks.knowledge_index", ignore_result=True)
def knowledge_index_task(article_id: int) -> int:
    return knowledge.chunks_index(article_id=article_id)


@shared_task(name="drafting.tasks.macros_index", ignore_result=True)
def macros_index_task(team_id: int) -> int:
    return knowledge.macros_index(team_id=team_id)


@shared_task(name="drafting.tasks.knowledge_index_stale", ignore_result=True)
def knowledge_index_stale_task() -> int:
    return knowledge.knowledge_index_stale()


@shared_task(name="drafting.tasks.intent_classifier_train", ignore_result=True)
def intent_classifier_train_task(team_id: int, user_id: int | None = None) -> str:
    return intents.intent_classifier_train_by_id(team_id=team_id, user_id=user_id)


@shared_task(name="drafting.tasks.message_intents_classify_recent", ignore_result=True)
def message_intents_classify_recent_task(team_id: int, limit: int = 500) -> int:
    return intents.message_intents_classify_recent_by_id(team_id=team_id, limit=limit)


@shared_task(name="drafting.tasks.knowledge_models_train", ignore_result=True)
def knowledge_models_train_task(team_id: int, user_id: int | None = None) -> list[str]:
    from drafting.learning.knowledge import knowledge_models_train_by_id

    return knowledge_models_train_by_id(team_id=team_id, user_id=user_id)


@shared_task(name="drafting.tasks.scorers_retrain", ignore_result=True)
def scorers_retrain_task() -> list[str]:
    from drafting.learning.scorer import scorers_retrain  # scikit-learn: worker-side only

    return [outcome.message for outcome in scorers_retrain()]


@shared_task(name="drafting.tasks.routers_retrain", ignore_result=True)
def routers_retrain_task() -> list[str]:
    from drafting.learning.routing import routers_retrain  # scikit-learn: worker-side only

    return [outcome.message for outcome in routers_retrain()]


@shared_task(name="drafting.tasks.adapters_retrain", ignore_result=True)
def adapters_retrain_task() -> list[int]:
    # drafting.distillation loads the trainer (torch, peft) when it trains: worker-side only.
    from drafting.distillation import distill_nightly

    return [run.pk for run in distill_nightly()]
