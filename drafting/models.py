"""Drafting: model endpoints, cascade policies, drafts, provider attempts and agent actions."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.contrib.postgres.search import SearchVectorField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Cast
from django.utils import timezone
from pgvector.django import HnswIndex, VectorField

# Money: exact decimals, 10 places (a local-GPU draft can cost a few millionths of a dollar).
MONEY_DIGITS, MONEY_PLACES = 18, 10
PRICE_DIGITS, PRICE_PLACES = 14, 6
ZERO = Decimal("0")


class ModelEndpoint(models.Model):
    """An OpenAI-compatible endpoint: the local vLLM server or a paid API."""

    class Kind(models.TextChoices):
        LOCAL = "local", "Local (GPU time)"
        PAID = "paid", "Paid API (tokens)"

    name = models.CharField(max_length=120, unique=True)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.PAID)
    base_url = models.URLField(
        max_length=300,
        blank=True,
        help_text="OpenAI-compatible base URL ending in /v1. Blank on a local endpoint: use "
        "LOCAL_LLM_URL or the server `manage.py local_llm` starts.",
    )
    model_name = models.CharField(max_length=200)
    api_key_env = models.CharField(
        max_length=100,
        blank=True,
        help_text="Name of the environment variable holding the API key (never the key itself).",
    )
    timeout_seconds = models.PositiveIntegerField(default=30, validators=[MinValueValidator(1)])
    max_output_tokens = models.PositiveIntegerField(default=256, validators=[MinValueValidator(1)])
    prompt_token_budget = models.PositiveIntegerField(
        default=1500,
        validators=[MinValueValidator(64)],
        help_text="Estimated prompt tokens sent at most: older turns are dropped first.",
    )
    enabled = models.BooleanField(default=True)
    daily_spend_cap = models.DecimalField(
        max_digits=PRICE_DIGITS,
        decimal_places=PRICE_PLACES,
        null=True,
        blank=True,
        help_text="USD per UTC day; once reached the tier is skipped until the next day. Blank: no cap.",
    )
    monthly_spend_cap = models.DecimalField(
        max_digits=PRICE_DIGITS,
        decimal_places=PRICE_PLACES,
        null=True,
        blank=True,
        help_text="USD per calendar month (UTC). Blank: no cap.",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=["local", "paid"]), name="endpoint_kind_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def has_spend_cap(self) -> bool:
        return self.daily_spend_cap is not None or self.monthly_spend_cap is not None

    def resolved_base_url(self) -> str:
        if self.base_url:
            return self.base_url
        if self.kind == self.Kind.LOCAL:
            return settings.LOCAL_LLM_URL or f"http://127.0.0.1:{settings.LOCAL_LLM_PORT}/v1"
        raise ValueError(f"Endpoint {self.name!r} has no base URL.")


class EndpointPrice(models.Model):
    """An endpoint's prices from `effective_from` on, until its next row takes over.

    Rows are never edited to change a price: a new row with a later `effective_from` is added,
    so attempts already charged keep the cost they were charged (drafting.engine.pricing).
    """

    endpoint = models.ForeignKey(ModelEndpoint, on_delete=models.CASCADE, related_name="prices")
    effective_from = models.DateTimeField()
    input_price_per_mtok = models.DecimalField(
        max_digits=PRICE_DIGITS,
        decimal_places=PRICE_PLACES,
        default=ZERO,
        help_text="USD per million input tokens.",
    )
    output_price_per_mtok = models.DecimalField(
        max_digits=PRICE_DIGITS,
        decimal_places=PRICE_PLACES,
        default=ZERO,
        help_text="USD per million output tokens.",
    )
    request_fee = models.DecimalField(
        max_digits=PRICE_DIGITS,
        decimal_places=PRICE_PLACES,
        default=ZERO,
        help_text="USD per request.",
    )
    gpu_hour_usd = models.DecimalField(
        max_digits=PRICE_DIGITS,
        decimal_places=PRICE_PLACES,
        default=ZERO,
        help_text="Local endpoints: USD per GPU hour.",
    )
    note = models.CharField(max_length=200, blank=True, help_text="Why, e.g. vendor price cut.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["endpoint", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "effective_from"], name="endpoint_price_unique_per_instant"
            ),
            models.CheckConstraint(
                condition=Q(input_price_per_mtok__gte=0)
                & Q(output_price_per_mtok__gte=0)
                & Q(request_fee__gte=0)
                & Q(gpu_hour_usd__gte=0),
                name="endpoint_price_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint} from {self.effective_from:%Y-%m-%d %H:%M %Z}"


class CascadePolicy(models.Model):
    """How a team's drafts are produced: ordered tiers, the system prompt, the hold-out share."""

    team = models.ForeignKey(
        "csbot.Team", on_delete=models.PROTECT, related_name="cascade_policies"
    )
    name = models.CharField(max_length=120)
    active = models.BooleanField(
        default=True, help_text="The team's drafts use its one active policy."
    )
    system_prompt = models.TextField()
    holdout_share = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        default=Decimal("0.05"),
        validators=[MinValueValidator(ZERO), MaxValueValidator(Decimal("1"))],
        help_text="Share of conversations that get no draft: the measured unaided baseline.",
    )
    explore_share = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        default=ZERO,
        validators=[MinValueValidator(ZERO), MaxValueValidator(Decimal("1"))],
        help_text=(
            "Share of drafts whose remaining tiers are also asked once the draft is ready "
            "(extra attempts, paid, never shown), so that the optimiser can compare the tiers "
            "on the same messages. 0 turns exploration off."
        ),
    )

    class NoKnowledge(models.TextChoices):
        ESCALATE = "escalate", "Escalate to the top tier with what was found"
        HOLDING = "holding", "Offer the holding reply"
        NO_DRAFT = "no_draft", "No draft: the agent answers"

    grounding = models.BooleanField(
        default=True,
        help_text="Ground drafts in the team's knowledge base: the best passages go into the "
        "prompt, numbered, and the draft cites them.",
    )
    no_knowledge_rule = models.CharField(
        max_length=10,
        choices=NoKnowledge.choices,
        default=NoKnowledge.ESCALATE,
        help_text="What happens when a customer turn needs knowledge and none is found.",
    )
    holding_reply = models.TextField(
        blank=True,
        default="Thank you for your message. Let me check this with the team, and I will get "
        "back to you shortly.",
        help_text="The draft offered under the holding rule; placeholders such as "
        "{customer_name} and {agent_name} are filled.",
    )
    # Decisions that maximise ENCS per message (issue 18): route before generating, withhold
    # drafts worth less than nothing to the agent, per-intent rules once labels allow.
    routing = models.BooleanField(
        default=True,
        help_text="Route before generating (skip a tier the router expects to fail) once a "
        "router trained on this policy's drafts beats the plain cascade on held-out drafts.",
    )
    withhold_negative = models.BooleanField(
        default=False,
        help_text="Withhold a draft whose expected ENCS of showing is negative: the agent "
        "writes unaided instead of reading a draft they would likely ignore.",
    )
    withhold_show_share = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        default=Decimal("0.1"),
        validators=[MinValueValidator(ZERO), MaxValueValidator(Decimal("1"))],
        help_text="Share of would-be-withheld drafts still shown, at random, so that the "
        "estimate stays honest (their actions say what withholding gave up).",
    )
    # Distillation (issue 19): retrain the local model's adapter from the replies agents sent.
    distill_nightly = models.BooleanField(
        default=False,
        help_text="Each night, train a new adapter for the local model from the replies "
        "agents sent, once enough new ones exist (the candidate then waits in shadow).",
    )
    distill_min_replies = models.PositiveIntegerField(
        default=200,
        validators=[MinValueValidator(10)],
        help_text="Sent replies, new since the last run, that the nightly retrain waits for.",
    )
    intent_min_labels = models.PositiveIntegerField(
        default=30,
        validators=[MinValueValidator(1)],
        help_text="Labelled drafts an intent needs before its own thresholds and routes "
        "replace the policy's.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "cascade policies"
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="policy_name_unique_per_team"),
            models.UniqueConstraint(
                fields=["team"], condition=Q(active=True), name="one_active_policy_per_team"
            ),
            models.CheckConstraint(
                condition=Q(holdout_share__gte=0) & Q(holdout_share__lte=1),
                name="policy_holdout_share_is_a_share",
            ),
            models.CheckConstraint(
                condition=Q(explore_share__gte=0) & Q(explore_share__lte=1),
                name="policy_explore_share_is_a_share",
            ),
            models.CheckConstraint(
                condition=Q(withhold_show_share__gte=0) & Q(withhold_show_share__lte=1),
                name="policy_withhold_show_share_is_a_share",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.team} / {self.name}"


class CascadeTier(models.Model):
    policy = models.ForeignKey(CascadePolicy, on_delete=models.CASCADE, related_name="tiers")
    position = models.PositiveSmallIntegerField(help_text="1 is asked first.")
    endpoint = models.ForeignKey(ModelEndpoint, on_delete=models.PROTECT, related_name="tiers")
    threshold = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        default=ZERO,
        validators=[MinValueValidator(ZERO), MaxValueValidator(Decimal("1"))],
        help_text="Stop at this tier when the draft's score reaches this value.",
    )

    class Meta:
        ordering = ["policy", "position"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "position"], name="tier_position_unique"),
            models.CheckConstraint(
                condition=Q(threshold__gte=0) & Q(threshold__lte=1),
                name="tier_threshold_is_a_share",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.policy} #{self.position}: {self.endpoint}"


class DraftQuerySet(models.QuerySet["Draft"]):
    def live(self) -> DraftQuerySet:
        return self.exclude(status=Draft.Status.SUPERSEDED)


class Draft(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        GENERATING = "generating", "Generating"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"
        SUPERSEDED = "superseded", "Superseded"
        HELD_OUT = "held_out", "Held out (no draft)"
        WITHHELD = "withheld", "Withheld (expected ENCS negative)"

    message = models.ForeignKey("csbot.Message", on_delete=models.CASCADE, related_name="drafts")
    policy = models.ForeignKey(CascadePolicy, on_delete=models.PROTECT, related_name="drafts")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    text = models.TextField(blank=True)
    final_endpoint = models.ForeignKey(
        ModelEndpoint, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    score = models.DecimalField(max_digits=5, decimal_places=4, null=True, blank=True)
    total_cost = models.DecimalField(
        max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=ZERO
    )
    counterfactual_cost = models.DecimalField(
        max_digits=MONEY_DIGITS,
        decimal_places=MONEY_PLACES,
        null=True,
        blank=True,
        help_text="What the policy's top tier alone would have cost for this draft's tokens.",
    )
    failure_reason = models.CharField(max_length=200, blank=True)
    tries = models.PositiveSmallIntegerField(
        default=0, help_text="How many times a worker claimed it."
    )
    retry_at = models.DateTimeField(null=True, blank=True, help_text="Not to be retried before.")
    created_at = models.DateTimeField(default=timezone.now)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)

    class Knowledge(models.TextChoices):
        UNCHECKED = "", "Not checked (grounding off, cache hit)"
        NOT_NEEDED = "not_needed", "Needs no knowledge"
        GROUNDED = "grounded", "Grounded in passages"
        NONE_FOUND = "none_found", "Needs knowledge, none found"

    knowledge = models.CharField(
        max_length=10, choices=Knowledge.choices, blank=True, default=Knowledge.UNCHECKED
    )
    knowledge_need = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="The detector's probability that the customer turn needs knowledge.",
    )
    knowledge_note = models.CharField(
        max_length=300,
        blank=True,
        help_text="Why the draft was grounded, or what the no-knowledge rule did and why.",
    )
    # The customer turn's embedding as retrieval used it: content gaps group the questions
    # that found nothing, or whose drafts were ignored, by these (no second embedding).
    question_embedding = VectorField(null=True, blank=True, editable=False)
    question_embedding_model = models.CharField(max_length=120, blank=True, editable=False)
    # When an agent first had this draft (or, held out, the bare message) in front of them:
    # the start of the handle time. Recorded by the server, never by the browser.
    first_shown_at = models.DateTimeField(null=True, blank=True)
    # Withholding (CascadePolicy.withhold_negative): the expected ENCS of showing this draft
    # when it was decided, and the probability of the decision taken (1 for a draft worth
    # showing; the show share for a negative one shown anyway, 1 − it for one withheld): the
    # propensity that off-policy estimates divide by.
    expected_encs = models.DecimalField(
        max_digits=MONEY_DIGITS,
        decimal_places=MONEY_PLACES,
        null=True,
        blank=True,
        help_text="Expected ENCS of showing the draft (USD), when the policy withholds.",
    )
    decision_probability = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="Probability with which the show/withhold decision taken was made.",
    )
    # A policy experiment's arm that drafted this message (its policy is the draft's policy).
    experiment_arm = models.ForeignKey(
        "ExperimentArm", null=True, blank=True, on_delete=models.PROTECT, related_name="drafts"
    )

    objects = DraftQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["message"],
                condition=~Q(status="superseded"),
                name="one_live_draft_per_message",
            ),
            models.CheckConstraint(
                condition=Q(
                    status__in=[
                        "queued",
                        "generating",
                        "ready",
                        "failed",
                        "superseded",
                        "held_out",
                        "withheld",
                    ]
                ),
                name="draft_status_valid",
            ),
            models.CheckConstraint(condition=Q(total_cost__gte=0), name="draft_cost_non_negative"),
            models.CheckConstraint(
                condition=~Q(status="ready") | Q(ready_at__isnull=False),
                name="ready_draft_has_ready_at",
            ),
            models.CheckConstraint(
                condition=Q(decision_probability__isnull=True)
                | (Q(decision_probability__gt=0) & Q(decision_probability__lte=1)),
                name="draft_decision_probability_is_a_probability",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "enqueued_at"], name="draft_sweep_idx"),
        ]

    def __str__(self) -> str:
        return f"Draft #{self.pk} ({self.status})"


class DraftAttempt(models.Model):
    """One call to one provider for one draft: what it cost and how it went."""

    class Outcome(models.TextChoices):
        OK = "ok", "OK"
        ERROR = "error", "Error"

    class ErrorKind(models.TextChoices):
        NONE = "", "—"
        RATE_LIMITED = "rate_limited", "Rate limited"
        TIMEOUT = "timeout", "Timeout"
        UNAVAILABLE = "unavailable", "Unavailable"
        CONTEXT_TOO_LONG = "context_too_long", "Context too long"
        PERMANENT = "permanent", "Auth / bad request"
        EMPTY = "empty", "Empty response"
        CIRCUIT_OPEN = "circuit_open", "Skipped: circuit open"
        SPEND_CAPPED = "spend_capped", "Skipped: spend cap reached"
        ROUTED = "routed", "Skipped: routed past"

    class Purpose(models.TextChoices):
        DRAFT = "", "Draft"
        SHORTEN = "shorten", "Composer: shorten"
        FRIENDLIER = "friendlier", "Composer: friendlier"
        FORMAL = "formal", "Composer: more formal"
        GRAMMAR = "grammar", "Composer: fix grammar"
        TRANSLATE = "translate", "Composer: translate"
        # A candidate adapter's answer to the draft's prompt (DistillRun in shadow): asked
        # after the draft was ready, never shown or chosen, its cost spent on the message.
        SHADOW = "shadow", "Shadow: candidate adapter"

    # The composer tools' purposes (drafting.engine.composer.TOOLS has one tool for each).
    COMPOSER_PURPOSES = frozenset(
        {
            Purpose.SHORTEN,
            Purpose.FRIENDLIER,
            Purpose.FORMAL,
            Purpose.GRAMMAR,
            Purpose.TRANSLATE,
        }
    )

    draft = models.ForeignKey(Draft, on_delete=models.CASCADE, related_name="attempts")
    tier = models.PositiveSmallIntegerField(help_text="Cascade position; 0 for a cache hit.")
    # A composer tool's rewrite of the agent's reply text (not a draft of its own): model spend
    # on the draft's message, so it counts in ENCS, but it never is the draft's answer.
    purpose = models.CharField(
        max_length=12, choices=Purpose.choices, blank=True, default=Purpose.DRAFT
    )
    # Null only for a cache hit, which asks no endpoint.
    endpoint = models.ForeignKey(
        ModelEndpoint, null=True, blank=True, on_delete=models.PROTECT, related_name="attempts"
    )
    prompt_tokens_saved = models.PositiveIntegerField(
        default=0, help_text="Estimated prompt tokens trimmed from the thread for this tier."
    )
    cache_hit = models.BooleanField(default=False)
    cache_match = models.CharField(
        max_length=8,
        choices=[("", "—"), ("exact", "Exact text"), ("semantic", "Similar text")],
        blank=True,
        default="",
    )
    cache_similarity = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="Semantic cache hits: cosine similarity of the two customer messages.",
    )
    macro = models.ForeignKey(
        "Macro",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="attempts",
        help_text="Macro offers (tier 0, no cost): the macro whose filled text is the draft.",
    )
    passages_shown = models.PositiveSmallIntegerField(
        default=0,
        help_text="How many of the draft's passages (best first) fitted into this tier's prompt.",
    )
    citations = ArrayField(
        models.PositiveSmallIntegerField(),
        default=list,
        blank=True,
        help_text="Passage numbers this attempt's draft cites ([n]), in order of first use.",
    )
    fewshot_examples = models.PositiveSmallIntegerField(
        default=0, help_text="Agent-used replies to similar messages put into the prompt."
    )
    cache_source = models.ForeignKey(
        Draft,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Cache hits: the draft whose agent-approved reply was reused.",
    )
    model_name = models.CharField(
        max_length=200, blank=True, help_text="The model the server resolved."
    )
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=ZERO)
    score = models.DecimalField(
        max_digits=5, decimal_places=4, null=True, blank=True, help_text="The cascade scorer's g."
    )
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    error_kind = models.CharField(max_length=20, choices=ErrorKind.choices, blank=True, default="")
    error_message = models.CharField(max_length=500, blank=True)
    # Which scorer judged the draft: null = the default scorer (no learned model in force).
    scorer = models.ForeignKey(
        "TrainedClassifier", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Word-level reasons for an escalation (the learned scorer's occlusion weights on this
    # attempt's draft): [{"word", "start", "end", "weight"}], weight < 0 pulled the score down.
    explanation = models.JSONField(null=True, blank=True)
    # Exploration (CascadePolicy.explore_share): a tier asked after the draft was ready, only
    # so the optimiser sees every tier's answer to the same message; never shown or chosen.
    exploratory = models.BooleanField(default=False)
    # The probability with which this attempt's tier was chosen when the choice was random
    # (exploration: the policy's explore share): off-policy estimates weight by its inverse.
    propensity = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="Probability with which this exploratory attempt was chosen.",
    )
    # A routed skip's (and a routed call's) estimates when the router decided: per tier
    # P(good draft), expected cost and latency, the value compared, the router's version.
    routing = models.JSONField(null=True, blank=True)
    # The tier's draft text, kept only for drafts in the exploration sample (each tier's answer
    # is labelled against what the agent sent); elsewhere the draft's own text is enough.
    text = models.TextField(blank=True, default="")
    started_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["draft", "started_at", "id"]
        indexes = [models.Index(fields=["endpoint", "started_at"], name="attempt_spend_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(cost__gte=0), name="attempt_cost_non_negative"),
            models.CheckConstraint(
                condition=Q(cache_hit=True) | Q(macro__isnull=False) | Q(endpoint__isnull=False),
                name="attempt_asks_an_endpoint_unless_cached_or_macro",
            ),
            models.CheckConstraint(
                condition=Q(outcome="ok", error_kind="") | (Q(outcome="error") & ~Q(error_kind="")),
                name="attempt_error_kind_matches_outcome",
            ),
        ]

    def __str__(self) -> str:
        return f"Attempt #{self.pk} tier {self.tier} {self.outcome}"

    @property
    def kind(self) -> str:
        """ "cache", "macro", "model", "shadow" (a candidate adapter) or "composer": what
        answered."""
        if self.purpose == self.Purpose.SHADOW:
            return "shadow"
        if self.purpose in self.COMPOSER_PURPOSES:
            return "composer"
        if self.cache_hit:
            return "cache"
        return "macro" if self.macro_id is not None else "model"


class AgentAction(models.Model):
    """What the agent did with a draft when replying: the raw material of ENCS."""

    class Kind(models.TextChoices):
        USE = "use", "Used as is"
        EDIT = "edit", "Edited"
        IGNORE = "ignore", "Ignored"
        NONE = "none", "No draft shown"

    draft = models.OneToOneField(
        Draft, null=True, blank=True, on_delete=models.PROTECT, related_name="action"
    )
    inbound_message = models.ForeignKey(
        "csbot.Message", on_delete=models.PROTECT, related_name="answering_actions"
    )
    outbound_message = models.OneToOneField(
        "csbot.Message", on_delete=models.PROTECT, related_name="agent_action"
    )
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="agent_actions"
    )
    kind = models.CharField(max_length=8, choices=Kind.choices)
    final_text = models.TextField()
    edit_distance = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="Normalised Levenshtein distance draft → final text (0 = unchanged, 1 = all new).",
    )
    shown_at = models.DateTimeField()
    acted_at = models.DateTimeField()
    # Wide enough for any interval between two valid datetimes (a reply years after the draft
    # was shown is stored as measured; accounting leaves it out, see `outlier_condition`).
    handle_seconds = models.DecimalField(max_digits=16, decimal_places=3)

    class Meta:
        constraints = [
            # One action per inbound message: a double-submitted reply is a duplicate.
            models.UniqueConstraint(
                fields=["inbound_message"], name="one_action_per_inbound_message"
            ),
            models.CheckConstraint(
                condition=Q(kind__in=["use", "edit", "ignore", "none"]), name="action_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(kind="none") | Q(draft__isnull=False), name="action_with_kind_has_draft"
            ),
            models.CheckConstraint(
                condition=Q(handle_seconds__gte=0), name="action_handle_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(acted_at__gte=models.F("shown_at")), name="action_acted_after_shown"
            ),
        ]
        # Accounting finds the days whose rollup a late action made stale by acted_at.
        indexes = [models.Index(fields=["acted_at"], name="action_acted_at_idx")]

    def __str__(self) -> str:
        return f"{self.kind} by {self.agent} on draft {self.draft_id}"

    @staticmethod
    def outlier_condition(prefix: str = "") -> Q:
        """Actions whose handle time is too long to be work on this message (the agent left
        it open over a break, a night, a holiday): kept, but not counted in ENCS. `prefix`
        reaches the action from another model (e.g. "action__" from a draft)."""
        return Q(**{f"{prefix}handle_seconds__gt": settings.ACTION_MAX_HANDLE_SECONDS})

    @property
    def is_outlier(self) -> bool:
        return self.handle_seconds > settings.ACTION_MAX_HANDLE_SECONDS


# Vectors live in a dimensionless `vector` column beside the name and the dimension of the
# embedder that made them, so changing the embedder needs no schema change and search never
# mixes models (drafting.engine.vectors filters on both). HNSW indexes need a fixed dimension:
# one partial expression index per dimension of the embedders csbot ships (MiniLM 384, the vLLM
# pooling model 576, both joined 960; drafting.engine.embeddings). Vectors of another dimension
# are still found, by a scan of the team's rows.
INDEXED_DIMENSIONS = (384, 576, 960)


def vector_indexes(prefix: str) -> list[models.Index]:
    """Cosine HNSW indexes, one per indexed dimension; searches must order by the same
    expression (`embedding::vector(N) <=> query`) for the planner to use them. ef_construction
    128 rather than pgvector's 64: a better graph, so recall@10 reaches 0.95 at a million
    vectors with ef_search 80 (p50 6 ms) instead of 320 (12 ms), for a build 1.4-1.6 times
    longer (bench/vectors.py, docs/performance.md)."""
    return [
        HnswIndex(
            OpClass(Cast("embedding", VectorField(dimensions=n)), name="vector_cosine_ops"),
            name=f"{prefix}_hnsw_{n}",
            m=16,
            ef_construction=128,
            condition=Q(embedding_dimensions=n),
        )
        for n in INDEXED_DIMENSIONS
    ]


class CachedReply(models.Model):
    """An agent-approved reply to a team's first-turn customer message (FrugalGPT's completion
    cache): the same opening question gets it again, at no model cost, until it expires. Its
    hits are the cache-hit attempts naming its source draft (drafting.selectors), not a
    counter: one write fewer on the hot path, and never out of step with the attempts."""

    team = models.ForeignKey("csbot.Team", on_delete=models.CASCADE, related_name="cached_replies")
    key = models.CharField(max_length=64, help_text="SHA-256 of the normalised customer text.")
    customer_text = models.TextField()
    reply = models.TextField()
    source_draft = models.ForeignKey(Draft, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    # The customer text's embedding (L2-normalised) for the semantic look-up, and the embedder
    # that made it: vectors of different models are never compared. None without an embedder.
    embedding = VectorField(null=True, editable=False)
    embedding_model = models.CharField(max_length=120, blank=True, editable=False)
    embedding_dimensions = models.PositiveSmallIntegerField(null=True, editable=False)

    class Meta:
        verbose_name_plural = "cached replies"
        constraints = [
            models.UniqueConstraint(fields=["team", "key"], name="cached_reply_unique_per_team")
        ]
        indexes = [
            # A small team's search is cheapest as a scan of its own rows (the planner's choice).
            models.Index(fields=["team", "embedding_model"], name="cached_reply_team_model_idx"),
            *vector_indexes("cached_reply"),
        ]

    def __str__(self) -> str:
        return self.customer_text[:60]


class ReplyExample(models.Model):
    """A reply an agent sent exactly as drafted, kept as a few-shot example for later drafts to
    similar customer messages. Both texts are scrubbed of personal data and customer details
    (drafting.engine.pii.scrub_details): they are shown to the model while it drafts for other
    customers."""

    team = models.ForeignKey("csbot.Team", on_delete=models.CASCADE, related_name="reply_examples")
    customer_text = models.TextField()
    reply = models.TextField()
    source_draft = models.OneToOneField(
        Draft, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    embedding = VectorField(editable=False)
    embedding_model = models.CharField(max_length=120, editable=False)
    embedding_dimensions = models.PositiveSmallIntegerField(editable=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["team", "embedding_model", "id"], name="reply_example_search_idx"),
            *vector_indexes("reply_example"),
        ]

    def __str__(self) -> str:
        return self.customer_text[:60]


class TrainedClassifier(models.Model):
    """A penalised logistic regression trained on this installation's own labels, versioned:
    a cascade policy's learned scorer (P(the draft is used or lightly edited)) or a team's
    intent classifier. The fitted model is stored as bytes (drafting.learning.plr.TrainedPLR) with the
    metrics it reached out of fold; one version per owner is active at a time."""

    class Kind(models.TextChoices):
        SCORER = "scorer", "Cascade scorer"
        INTENT = "intent", "Intent classifier"
        KNOWLEDGE = "knowledge", "Needs-knowledge detector"
        RERANKER = "reranker", "Passage re-ranker"
        ROUTER = "router", "Cascade router"

    kind = models.CharField(max_length=12, choices=Kind.choices)
    policy = models.ForeignKey(
        CascadePolicy, null=True, blank=True, on_delete=models.CASCADE, related_name="scorers"
    )
    team = models.ForeignKey(
        "csbot.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="classifiers"
    )
    version = models.PositiveIntegerField()
    active = models.BooleanField(default=False)
    embedding_model = models.CharField(
        max_length=120, help_text="Embedder.name of the vectors it was trained on."
    )
    features = models.CharField(max_length=200, help_text="What the feature rows hold.")
    penalty = models.CharField(max_length=12)
    strength_c = models.FloatField(help_text="Inverse penalty strength chosen by CV.")
    n_train = models.PositiveIntegerField()
    metrics = models.JSONField(default=dict)
    model_blob = models.BinaryField(editable=False)
    trained_at = models.DateTimeField(default=timezone.now)
    trained_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-trained_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(kind__in=["scorer", "router"])
                    & Q(policy__isnull=False)
                    & Q(team__isnull=True)
                )
                | (
                    Q(kind__in=["intent", "knowledge", "reranker"])
                    & Q(team__isnull=False)
                    & Q(policy__isnull=True)
                ),
                name="classifier_owner_matches_kind",
            ),
            models.UniqueConstraint(
                fields=["kind", "policy", "team", "version"], name="classifier_version_unique"
            ),
            models.UniqueConstraint(
                fields=["policy"],
                condition=Q(active=True, kind="scorer"),
                name="one_active_scorer_per_policy",
            ),
            models.UniqueConstraint(
                fields=["policy"],
                condition=Q(active=True, kind="router"),
                name="one_active_router_per_policy",
            ),
            models.UniqueConstraint(
                fields=["team", "kind"],
                condition=Q(active=True, kind__in=["intent", "knowledge", "reranker"]),
                name="one_active_team_classifier_per_kind",
            ),
        ]

    def __str__(self) -> str:
        owner = (
            f"policy {self.policy_id}"
            if self.kind in (self.Kind.SCORER, self.Kind.ROUTER)
            else f"team {self.team_id}"
        )
        return f"{self.get_kind_display()} v{self.version} ({owner})"


class Intent(models.Model):
    """What a customer wants (e.g. card_arrival), defined per team by its admins."""

    team = models.ForeignKey("csbot.Team", on_delete=models.CASCADE, related_name="intents")
    name = models.SlugField(max_length=80)
    description = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["team", "name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="intent_name_unique_per_team")
        ]

    def __str__(self) -> str:
        return self.name


class IntentExample(models.Model):
    """A labelled inbound message: the few dozen per intent the classifier learns from."""

    intent = models.ForeignKey(Intent, on_delete=models.CASCADE, related_name="examples")
    text = models.TextField()
    message = models.ForeignKey(
        "csbot.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    labelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["intent", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["intent", "message"],
                condition=Q(message__isnull=False),
                name="intent_example_once_per_message",
            )
        ]

    def __str__(self) -> str:
        return f"{self.intent}: {self.text[:50]}"


class MessageIntent(models.Model):
    """The intent classifier's verdict on one inbound message."""

    # A person's label is the verdict, with full confidence and no classifier.
    LABEL_CONFIDENCE = Decimal("1")

    message = models.OneToOneField(
        "csbot.Message", on_delete=models.CASCADE, related_name="intent_verdict"
    )
    intent = models.ForeignKey(Intent, on_delete=models.CASCADE, related_name="verdicts")
    confidence = models.DecimalField(
        max_digits=5, decimal_places=4, validators=[MinValueValidator(0), MaxValueValidator(1)]
    )
    classifier = models.ForeignKey(
        TrainedClassifier, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    classified_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["intent", "classified_at"], name="message_intent_idx")]

    def __str__(self) -> str:
        return f"{self.intent} ({self.confidence})"


# --- Knowledge: the team's articles and macros, the passages drafts are grounded in -----------
#
# An article is split into chunks (along headings and paragraphs, to a token budget); a chunk
# is what retrieval finds and what a draft cites. The article row is the truth: a chunk's
# content hash says whether an edit changed it (only changed chunks are embedded again, in the
# worker), and retrieval joins the article, so unpublishing or deleting it takes its chunks out
# of every search at once. Vectors are stored as the semantic cache's are (dimensionless column,
# embedder name and dimension, per-dimension HNSW); text search uses a tsvector built with the
# article's language.


class KnowledgeArticle(models.Model):
    class Format(models.TextChoices):
        MARKDOWN = "markdown", "Markdown"
        HTML = "html", "HTML"
        TEXT = "text", "Plain text"

    team = models.ForeignKey(
        "csbot.Team", on_delete=models.CASCADE, related_name="knowledge_articles"
    )
    external_id = models.CharField(
        max_length=200,
        help_text="The article's id in its source (help center, file name): imports and the "
        "API update the article with the same id.",
    )
    title = models.CharField(max_length=300)
    body = models.TextField()
    body_format = models.CharField(max_length=8, choices=Format.choices, default=Format.MARKDOWN)
    source_url = models.URLField(max_length=500, blank=True)
    tags = ArrayField(models.CharField(max_length=60), default=list, blank=True)
    language = models.CharField(
        max_length=12, default="en", help_text="ISO 639-1 code; picks the text-search stemmer."
    )
    published = models.BooleanField(
        default=True, help_text="Only published articles are retrieved."
    )
    version = models.PositiveIntegerField(
        default=1, help_text="Goes up by one each time the content changes."
    )
    content_hash = models.CharField(
        max_length=64, help_text="SHA-256 of what the chunks are made from: same hash, no work."
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["team", "title", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["team", "external_id"], name="knowledge_article_unique_per_team"
            )
        ]

    def __str__(self) -> str:
        return self.title


class KnowledgeChunk(models.Model):
    article = models.ForeignKey(KnowledgeArticle, on_delete=models.CASCADE, related_name="chunks")
    # The article's team, repeated: every search filters by it first.
    team = models.ForeignKey("csbot.Team", on_delete=models.CASCADE, related_name="+")
    position = models.PositiveIntegerField(help_text="0 is the article's first chunk.")
    heading = models.CharField(
        max_length=300, blank=True, help_text="The headings above the chunk, outermost first."
    )
    text = models.TextField()
    content_hash = models.CharField(max_length=64, help_text="SHA-256 of heading and text.")
    search_vector = SearchVectorField(null=True, editable=False)
    # None until the worker has embedded it (the chunk is then found by text search only).
    embedding = VectorField(null=True, editable=False)
    embedding_model = models.CharField(max_length=120, blank=True, editable=False)
    embedding_dimensions = models.PositiveSmallIntegerField(null=True, editable=False)

    class Meta:
        ordering = ["article", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["article", "position"], name="knowledge_chunk_position_unique"
            )
        ]
        indexes = [
            GinIndex(fields=["search_vector"], name="knowledge_chunk_search_idx"),
            models.Index(fields=["team", "embedding_model"], name="knowledge_chunk_team_idx"),
            *vector_indexes("knowledge_chunk"),
        ]

    def __str__(self) -> str:
        return f"{self.article} #{self.position}"


class Macro(models.Model):
    """A canned reply with placeholders ({customer_name}, {agent_name}, …): offered as a draft
    at no model cost when it matches the customer's turn, and insertable from the console."""

    team = models.ForeignKey("csbot.Team", on_delete=models.CASCADE, related_name="macros")
    external_id = models.CharField(max_length=200)
    title = models.CharField(max_length=200)
    body = models.TextField()
    tags = ArrayField(models.CharField(max_length=60), default=list, blank=True)
    language = models.CharField(max_length=12, default="en")
    active = models.BooleanField(default=True)
    intent = models.ForeignKey(
        Intent,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="macros",
        help_text="Offer this macro for messages classified as this intent.",
    )
    content_hash = models.CharField(max_length=64)
    # Title and body embedded: the matcher's starting point before agents have used it.
    embedding = VectorField(null=True, editable=False)
    embedding_model = models.CharField(max_length=120, blank=True, editable=False)
    embedding_dimensions = models.PositiveSmallIntegerField(null=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["team", "title", "id"]
        constraints = [
            models.UniqueConstraint(fields=["team", "external_id"], name="macro_unique_per_team")
        ]
        indexes = [models.Index(fields=["team", "embedding_model"], name="macro_team_idx")]

    def __str__(self) -> str:
        return self.title


class MacroExample(models.Model):
    """A customer turn a macro was offered for, and whether the agent used it: how agents'
    choices teach the matcher (used turns pull similar turns to the macro; ignored ones push)."""

    macro = models.ForeignKey(Macro, on_delete=models.CASCADE, related_name="examples")
    customer_text = models.TextField()
    used = models.BooleanField()
    source_draft = models.OneToOneField(
        Draft, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    embedding = VectorField(editable=False)
    embedding_model = models.CharField(max_length=120, editable=False)
    embedding_dimensions = models.PositiveSmallIntegerField(editable=False)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.macro}: {self.customer_text[:50]}"


class DraftPassage(models.Model):
    """A passage retrieval found for a draft, in the order it is numbered in the prompt ([n]).
    Each attempt records how many fitted its prompt (DraftAttempt.passages_shown) and which it
    cited (DraftAttempt.citations); `cited` marks those the draft the agent saw cites."""

    draft = models.ForeignKey(Draft, on_delete=models.CASCADE, related_name="passages")
    number = models.PositiveSmallIntegerField(help_text="[n] in the prompt; 1 is the best.")
    chunk = models.ForeignKey(
        KnowledgeChunk, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    article = models.ForeignKey(
        KnowledgeArticle, null=True, blank=True, on_delete=models.SET_NULL, related_name="passages"
    )
    article_version = models.PositiveIntegerField()
    # The passage as the model saw it: the console shows it even after the article changes.
    text = models.TextField()
    score = models.FloatField(help_text="Relevance after fusion and re-ranking.")
    vector_similarity = models.FloatField(null=True, blank=True)
    text_rank = models.FloatField(null=True, blank=True)
    cited = models.BooleanField(default=False)

    class Meta:
        ordering = ["draft", "number"]
        constraints = [
            models.UniqueConstraint(fields=["draft", "number"], name="draft_passage_number_unique")
        ]
        indexes = [models.Index(fields=["article", "cited"], name="draft_passage_article_idx")]

    def __str__(self) -> str:
        return f"[{self.number}] {self.text[:50]}"


class KnowledgeLabel(models.Model):
    """A person's label of a customer turn, the few dozen the tens-of-shot knowledge models
    learn from: whether the turn needs the knowledge base (the detector), and which chunks
    answer it (the re-ranker; empty when none does or the turn needs none)."""

    team = models.ForeignKey("csbot.Team", on_delete=models.CASCADE, related_name="+")
    text = models.TextField(help_text="The customer turn, with what the thread said before it.")
    needs_knowledge = models.BooleanField()
    relevant_chunks = models.ManyToManyField(KnowledgeChunk, blank=True, related_name="+")
    message = models.ForeignKey(
        "csbot.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    labelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{'needs' if self.needs_knowledge else 'no'} knowledge: {self.text[:50]}"


class IntentRule(models.Model):
    """One intent's own threshold (and route) for one tier of a policy, in force once the intent
    has at least the policy's `intent_min_labels` labelled drafts; without a rule the tier's own
    threshold applies. Proposed by the optimiser per intent, applied by an admin."""

    tier = models.ForeignKey(CascadeTier, on_delete=models.CASCADE, related_name="intent_rules")
    intent = models.ForeignKey(Intent, on_delete=models.CASCADE, related_name="tier_rules")
    threshold = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        validators=[MinValueValidator(ZERO), MaxValueValidator(Decimal("1"))],
        help_text="Stop at this tier, for this intent, when the draft's score reaches this value.",
    )
    skip = models.BooleanField(
        default=False,
        help_text="Route past this tier for this intent (its drafts rarely serve it).",
    )
    n_labels = models.PositiveIntegerField(help_text="Labelled drafts of the intent it came from.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["tier", "intent"]
        constraints = [
            models.UniqueConstraint(fields=["tier", "intent"], name="intent_rule_unique"),
            models.CheckConstraint(
                condition=Q(threshold__gte=0) & Q(threshold__lte=1),
                name="intent_rule_threshold_is_a_share",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tier} / {self.intent}: {self.threshold}"


class ActionValues(models.Model):
    """What an agent's action on a draft is worth to a team, in USD per draft (the S_a of
    ENCS = P(use)·S_use + P(edit)·S_edit + P(ignore)·S_ignore − C), and a second of an agent's
    wait: measured by accounting from the team's own actions and written here through
    drafting's service, because drafting decides with them (withholding, routing) and never
    imports accounting."""

    team = models.OneToOneField("csbot.Team", on_delete=models.CASCADE, related_name="+")
    s_use = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES)
    s_edit = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES)
    s_ignore = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES)
    wait_per_second = models.DecimalField(
        max_digits=MONEY_DIGITS,
        decimal_places=MONEY_PLACES,
        help_text="The agent rate per second: what a second of waiting for a draft costs.",
    )
    n_actions = models.PositiveIntegerField(help_text="Agent actions the values were measured on.")
    computed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "action values"

    def __str__(self) -> str:
        return f"{self.team}: use {self.s_use}, edit {self.s_edit}, ignore {self.s_ignore}"


class Experiment(models.Model):
    """A randomised comparison of cascade policies: each new conversation of the team goes to
    one arm, drawn by a seeded hash of its id (sticky: every draft of the conversation uses that
    arm's policy), with the arms' shares. At most one runs per team at a time; stopping keeps
    the results, promoting makes the winning arm's policy the team's active one."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"
        PROMOTED = "promoted", "Stopped, winner promoted"

    team = models.ForeignKey("csbot.Team", on_delete=models.PROTECT, related_name="experiments")
    name = models.CharField(max_length=120)
    seed = models.PositiveIntegerField(help_text="Salt of the assignment hash.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField(default=timezone.now)
    stopped_at = models.DateTimeField(null=True, blank=True)
    winner = models.ForeignKey(
        "ExperimentArm", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.TextField(blank=True, help_text="What is being tested, and why.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="experiment_name_unique"),
            models.UniqueConstraint(
                fields=["team"], condition=Q(status="running"), name="one_running_experiment"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["running", "stopped", "promoted"]),
                name="experiment_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(status="running") | Q(stopped_at__isnull=False),
                name="stopped_experiment_has_stopped_at",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.team} / {self.name} ({self.status})"


class ExperimentArm(models.Model):
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="arms")
    name = models.CharField(max_length=60)
    position = models.PositiveSmallIntegerField(help_text="Order of the arms in the hash.")
    policy = models.ForeignKey(CascadePolicy, on_delete=models.PROTECT, related_name="arms")
    share = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        validators=[MinValueValidator(Decimal("0.0001")), MaxValueValidator(Decimal("1"))],
        help_text="Share of the experiment's conversations assigned to this arm.",
    )

    class Meta:
        ordering = ["experiment", "position"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "name"], name="arm_name_unique"),
            models.UniqueConstraint(fields=["experiment", "position"], name="arm_position_unique"),
            models.CheckConstraint(
                condition=Q(share__gt=0) & Q(share__lte=1), name="arm_share_is_a_share"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.experiment.name} / {self.name}"


class DistillRun(models.Model):
    """One fine-tuning of the local model on a team's sent replies: a versioned LoRA adapter.

    The row is the adapter's whole life: what it was trained on (the export's hash and
    counts), how (hyper-parameters, loss curve, validation figures), what the machine time
    cost (booked by accounting as a one-off fixed cost), where it is served (`endpoint`, once
    published), and its stage: a candidate, answering in shadow for a share of drafts,
    promoted into the policy's tier (`replaced_endpoint` is what rollback puts back), retired.
    """

    class Status(models.TextChoices):
        RUNNING = "running", "Training"
        SUCCEEDED = "succeeded", "Trained"
        FAILED = "failed", "Failed"

    class Stage(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        SHADOW = "shadow", "In shadow"
        PROMOTED = "promoted", "Promoted"
        RETIRED = "retired", "Retired"

    class Serving(models.TextChoices):
        # vLLM applies the adapter beside the base model's weights at every step: no second
        # server, loaded and swapped at run time, but on a CPU each step costs about twice the
        # base's (docs/distillation.md). A merged copy (the adapter folded into the weights)
        # decodes as fast as the base, on a server of its own.
        LORA = "lora", "LoRA beside the base"
        MERGED = "merged", "Merged copy on its own server"

    team = models.ForeignKey("csbot.Team", on_delete=models.PROTECT, related_name="distill_runs")
    policy = models.ForeignKey(
        CascadePolicy,
        on_delete=models.PROTECT,
        related_name="distill_runs",
        help_text="The policy whose local tier the adapter is for.",
    )
    version = models.PositiveIntegerField(help_text="1, 2, … per team.")
    base_endpoint = models.ForeignKey(
        ModelEndpoint,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The local endpoint whose model the adapter fine-tunes.",
    )
    base_model = models.CharField(max_length=200, help_text="The base model's folder or name.")
    adapter_name = models.CharField(
        max_length=120, unique=True, help_text="The model name vLLM serves the adapter under."
    )
    adapter_path = models.CharField(max_length=500, blank=True)
    serving = models.CharField(max_length=8, choices=Serving.choices, default=Serving.LORA)
    merged_path = models.CharField(
        max_length=500, blank=True, help_text="The merged model folder (serving merged)."
    )
    endpoint = models.OneToOneField(
        ModelEndpoint,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="adapter_run",
        help_text="The endpoint serving the adapter (set when published).",
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    stage = models.CharField(max_length=10, choices=Stage.choices, default=Stage.CANDIDATE)
    # The data snapshot: the export's filters, its file's sha256 and its counts.
    filters = models.JSONField(default=dict, blank=True)
    data_sha256 = models.CharField(max_length=64, blank=True)
    n_train = models.PositiveIntegerField(default=0)
    n_validation = models.PositiveIntegerField(default=0)
    n_conversations = models.PositiveIntegerField(default=0)
    hyperparameters = models.JSONField(default=dict, blank=True)
    # [{"step", "epoch", "loss"}] and, per evaluation, {"step", "validation_loss"}.
    loss_curve = models.JSONField(default=list, blank=True)
    # Validation figures: loss, perplexity, ROUGE-L of greedy replies against the agents'.
    validation = models.JSONField(default=dict, blank=True)
    device = models.CharField(max_length=20, blank=True, help_text='"cpu" or "cuda".')
    machine_seconds = models.DecimalField(
        max_digits=12, decimal_places=3, default=ZERO, validators=[MinValueValidator(ZERO)]
    )
    hour_usd = models.DecimalField(
        max_digits=PRICE_DIGITS,
        decimal_places=PRICE_PLACES,
        default=ZERO,
        validators=[MinValueValidator(ZERO)],
        help_text="USD per machine hour the training was charged at.",
    )
    cost_usd = models.DecimalField(
        max_digits=MONEY_DIGITS,
        decimal_places=MONEY_PLACES,
        default=ZERO,
        validators=[MinValueValidator(ZERO)],
        help_text="machine_seconds / 3600 × hour_usd: booked as a one-off fixed cost.",
    )
    shadow_share = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        default=Decimal("0.1"),
        validators=[MinValueValidator(ZERO), MaxValueValidator(Decimal("1"))],
        help_text="In shadow: share of the policy's drafts the adapter also answers (never shown).",
    )
    shadow_tier = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="The tier position the adapter shadows and, once promoted, serves.",
    )
    promoted_at = models.DateTimeField(null=True, blank=True)
    promoted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    replaced_endpoint = models.ForeignKey(
        ModelEndpoint,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The tier's endpoint before promotion: rollback puts it back.",
    )
    rolled_back_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["team", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["team", "version"], name="distill_version_unique"),
            models.UniqueConstraint(
                fields=["policy"], condition=Q(stage="shadow"), name="one_shadow_adapter_per_policy"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["running", "succeeded", "failed"]),
                name="distill_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(stage__in=["candidate", "shadow", "promoted", "retired"]),
                name="distill_stage_valid",
            ),
            models.CheckConstraint(
                condition=Q(stage="candidate") | Q(stage="retired") | Q(status="succeeded"),
                name="distill_only_trained_adapters_serve",
            ),
            models.CheckConstraint(
                condition=Q(shadow_share__gte=0) & Q(shadow_share__lte=1),
                name="distill_shadow_share_is_a_share",
            ),
            models.CheckConstraint(
                condition=Q(cost_usd__gte=0) & Q(machine_seconds__gte=0),
                name="distill_cost_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(serving="lora") | (Q(serving="merged") & ~Q(merged_path="")),
                name="distill_merged_serving_has_a_folder",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.team} / adapter v{self.version} ({self.stage})"
