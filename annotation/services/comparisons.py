"""Build comparisons (the unit of labeling work) from the candidates of each prompt."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from django.db import transaction

from annotation.models import Candidate, Comparison, Project, Prompt, TaskType

BULK_BATCH = 2000


@dataclass
class BuildResult:
    created: int = 0
    prompts_short: int = 0  # prompts with unused candidates but fewer than K of them
    leftover: int = 0  # candidates not grouped (pool size not a multiple of K)


def group_round_robin(candidates: list[tuple[int, str]], k: int) -> list[list[int]]:
    """Split (candidate id, model label) pairs into groups of k, mixing models in each group.

    Candidates are dealt model by model in turn, so a group compares as many different
    models/versions as the pool offers; leftovers (fewer than k) are not grouped.
    """
    by_model: dict[str, list[int]] = defaultdict(list)
    for candidate_id, model in sorted(candidates):
        by_model[model].append(candidate_id)
    queues = [list(ids) for _, ids in sorted(by_model.items())]
    order: list[int] = []
    while any(queues):
        for queue in queues:
            if queue:
                order.append(queue.pop(0))
    groups = [order[i : i + k] for i in range(0, len(order) - len(order) % k, k)]
    return groups


@transaction.atomic
def comparisons_build(*, project: Project, models: list[str] | None = None) -> BuildResult:
    """Group each prompt's candidates not yet in a comparison into comparisons of K.

    `models` restricts the pool to candidates of those model versions / model names.
    Never builds the same candidate set twice for a prompt (a constraint backs this).
    """
    if project.task_type == TaskType.DEMONSTRATION:
        return _demonstration_tasks_build(project=project, models=models)
    k = project.num_candidates
    pool = Candidate.objects.filter(prompt__project=project, comparisons__isnull=True)
    if models:
        from django.db.models import Q

        pool = pool.filter(Q(model_version__name__in=models) | Q(model_name__in=models))
    by_prompt: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for candidate_id, prompt_id, version_name, model_name in pool.values_list(
        "id", "prompt_id", "model_version__name", "model_name"
    ).iterator(chunk_size=BULK_BATCH):
        by_prompt[prompt_id].append((candidate_id, version_name or model_name or ""))
    existing_keys = set(
        Comparison.objects.filter(prompt_id__in=list(by_prompt)).values_list(
            "prompt_id", "candidate_key"
        )
    )
    result = BuildResult()
    new: list[Comparison] = []
    for prompt_id, candidates in sorted(by_prompt.items()):
        groups = group_round_robin(candidates, k)
        if not groups:
            result.prompts_short += 1
        result.leftover += len(candidates) - k * len(groups)
        for group in groups:
            key = Comparison.key_for(group)
            if (prompt_id, key) in existing_keys:
                continue
            existing_keys.add((prompt_id, key))
            new.append(
                Comparison(
                    project=project,
                    prompt_id=prompt_id,
                    candidate_ids=group,
                    candidate_key=key,
                    required=project.overlap,
                )
            )
    created = Comparison.objects.bulk_create(new, batch_size=BULK_BATCH)
    through = Comparison.candidates.through
    links = [
        through(comparison_id=c.pk, candidate_id=cid) for c in created for cid in c.candidate_ids
    ]
    through.objects.bulk_create(links, batch_size=BULK_BATCH)
    result.created = len(created)
    return result


def _demonstration_tasks_build(*, project: Project, models: list[str] | None) -> BuildResult:
    """One comparison per prompt that has none: the task of writing its answer.

    A prompt needs no candidates here; up to K of its candidates (models mixed, as for
    rankings) go with it as references for the labeler. The candidate set may be empty, and
    the unique (prompt, candidate set) constraint then still holds one task per prompt.
    """
    from django.db.models import Q

    k = project.num_candidates
    result = BuildResult()
    todo = list(
        Prompt.objects.filter(project=project, comparisons__isnull=True)
        .order_by("id")
        .values_list("id", flat=True)
    )
    for start in range(0, len(todo), BULK_BATCH):
        prompt_ids = todo[start : start + BULK_BATCH]
        pool = Candidate.objects.filter(prompt_id__in=prompt_ids)
        if models:
            pool = pool.filter(Q(model_version__name__in=models) | Q(model_name__in=models))
        by_prompt: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for candidate_id, prompt_id, version_name, model_name in pool.values_list(
            "id", "prompt_id", "model_version__name", "model_name"
        ):
            by_prompt[prompt_id].append((candidate_id, version_name or model_name or ""))
        new = []
        for prompt_id in prompt_ids:
            candidates = by_prompt.get(prompt_id, [])
            # Round-robin over models, then the first K: references from as many models as
            # the pool offers.
            references = group_round_robin(candidates, 1)
            group = [g[0] for g in references][:k]
            new.append(
                Comparison(
                    project=project,
                    prompt_id=prompt_id,
                    candidate_ids=group,
                    candidate_key=Comparison.key_for(group),
                    required=project.overlap,
                )
            )
        created = Comparison.objects.bulk_create(new, batch_size=BULK_BATCH)
        through = Comparison.candidates.through
        through.objects.bulk_create(
            [
                through(comparison_id=c.pk, candidate_id=cid)
                for c in created
                for cid in c.candidate_ids
            ],
            batch_size=BULK_BATCH,
        )
        result.created += len(created)
    return result
