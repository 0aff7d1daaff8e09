"""Model versions and training runs: the lineage of every policy and reward model.

This app depends on no other app of the project. What a run read from labeling (its
project, its export) is recorded on the labeling side, by `annotation.RunSource`.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ModelVersion(models.Model):
    class Kind(models.TextChoices):
        POLICY = "policy", "Policy"
        REWARD = "reward", "Reward model"

    name = models.CharField(max_length=255, unique=True)
    path = models.CharField(max_length=1024, help_text="Hub id or local directory.")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.POLICY)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    produced_by = models.ForeignKey(
        "TrainingRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="produced_versions",
    )
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.name

    def lineage(self) -> list[ModelVersion]:
        """This version and its ancestors, newest first (bounded against accidental cycles)."""
        chain, node, seen = [], self, set()
        while node is not None and node.pk not in seen and len(chain) < 100:
            chain.append(node)
            seen.add(node.pk)
            node = node.parent
        return chain


class TrainingRun(models.Model):
    class Kind(models.TextChoices):
        GENERATE = "generate", "Candidate generation"
        REWARD = "reward", "Reward model"
        PPO = "ppo", "PPO"
        SFT = "sft", "SFT"
        DPO = "dpo", "DPO"
        LOOP = "loop", "Full loop"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    config = models.JSONField(default=dict, blank=True)
    input_models = models.ManyToManyField(ModelVersion, blank=True, related_name="consumed_by")
    output_model = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    output_dir = models.CharField(max_length=1024, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="Final metrics.")
    metrics_history = models.JSONField(default=list, blank=True)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    process = models.CharField(
        max_length=300,
        blank=True,
        help_text="Host, pid and start time of the process running it: a run whose process is "
        "gone without finishing is marked failed (interrupted).",
    )

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["kind", "status"], name="run_kind_status_idx")]

    def __str__(self) -> str:
        return f"{self.kind} run {self.pk}"
