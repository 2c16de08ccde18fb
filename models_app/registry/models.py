"""The model registry: agents, the providers that serve them, the model versions they can use, and
the API keys agents authenticate with. Writes go through models_app/registry/services.py."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords


class ProviderKind(models.TextChoices):
    MISTRAL = "mistral", "Mistral (official SDK)"
    OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible server (vLLM, Ollama, llama.cpp, Together)"
    SIMULATOR = "simulator", "Genesis Mistral simulator"


class ProviderAccount(models.Model):
    """Where a model is served. The API key itself never lives here, only the *name* of the
    environment variable that holds it."""

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=32, choices=ProviderKind.choices)
    base_url = models.URLField(max_length=300)
    api_key_env = models.CharField(
        max_length=100,
        blank=True,
        validators=[RegexValidator(r"^[A-Z_][A-Z0-9_]*$", "an environment variable name, e.g. MISTRAL_API_KEY")],
        help_text="Name of the environment variable holding the API key (never the key itself).",
    )
    rate_limit_per_minute = models.PositiveIntegerField(default=600)
    max_concurrency = models.PositiveIntegerField(default=8, validators=[MinValueValidator(1)])
    timeout_seconds = models.FloatField(default=30.0, validators=[MinValueValidator(0.1)])
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Agent(models.Model):
    """A service that answers with a model: qa_agent, legal_agent… Its live model is the one
    `ModelVersion` with status live (at most one, enforced by a constraint)."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=120)
    purpose = models.TextField(blank=True)
    system_prompt = models.TextField(blank=True)
    temperature = models.FloatField(default=0.2, validators=[MinValueValidator(0), MaxValueValidator(2)])
    max_tokens = models.PositiveIntegerField(default=512, validators=[MinValueValidator(1)])
    top_p = models.FloatField(default=1.0, validators=[MinValueValidator(0), MaxValueValidator(1)])
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class ModelKind(models.TextChoices):
    BASELINE = "baseline"
    FINE_TUNED = "fine_tuned", "Fine-tuned"


class ModelStatus(models.TextChoices):
    REGISTERED = "registered"
    BENCHMARKING = "benchmarking"
    APPROVED_FOR_ROLLOUT = "approved_for_rollout", "Approved for rollout"
    ROLLING_OUT = "rolling_out", "Rolling out"
    LIVE = "live"
    RETIRED = "retired"
    REJECTED = "rejected"


class ModelVersion(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="versions")
    provider = models.ForeignKey(ProviderAccount, on_delete=models.PROTECT, related_name="versions")
    model_id = models.CharField(max_length=200, help_text="The provider's model id, e.g. ft:open-mistral-7b:…")
    base_model = models.CharField(max_length=120)
    kind = models.CharField(max_length=16, choices=ModelKind.choices)
    status = models.CharField(max_length=24, choices=ModelStatus.choices, default=ModelStatus.REGISTERED)
    registered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reason = models.TextField(blank=True, help_text="Why it was registered.")
    created_at = models.DateTimeField(auto_now_add=True)
    status_changed_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["agent__slug", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "provider", "model_id"], name="unique_model_per_agent_provider"),
            models.UniqueConstraint(
                fields=["agent"], condition=Q(status="live"), name="one_live_version_per_agent"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent.slug}: {self.model_id}"


class ApiKey(models.Model):
    """A bearer key an agent service calls the API with. Only a SHA-256 hash and a short prefix are
    stored: the keys are 256-bit random values, so a fast hash is enough (as for GitHub tokens) and
    lets a request be authenticated with one indexed lookup."""

    label = models.CharField(max_length=120)
    prefix = models.CharField(max_length=16, db_index=True)
    hashed_key = models.CharField(max_length=64, unique=True)
    all_agents = models.BooleanField(default=False)
    agents = models.ManyToManyField(Agent, blank=True, related_name="api_keys")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # None: the key never expires (every key made before expiry existed). Past it, authentication
    # refuses the key as it refuses a revoked one, but says why.
    expires_at = models.DateTimeField(null=True, blank=True)
    # Who created, revoked or rotated the key and why. No copy of the hash (nor of last_used_at, which
    # authentication refreshes every few seconds by an UPDATE that history does not see anyway).
    history = HistoricalRecords(excluded_fields=["hashed_key", "last_used_at"])

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.label} ({self.prefix}…)"
