"""Build comparisons (the unit of labeling work) from the candidates of each prompt."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from django.db import transaction

from annotation.models import Candidate, Comparison, ComparisonCandidate, Project

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
                    required=project.overlap,
                )
            )
    result.created = len(comparisons_insert(comparisons=new))
    return result


@transaction.atomic
def comparisons_insert(*, comparisons: list[Comparison]) -> list[Comparison]:
    """Insert unsaved comparisons with what their candidate_ids imply, in bulk.

    candidate_ids is the one source: each comparison's candidate_key and its
    ComparisonCandidate rows (the `candidates` relation) are derived here, so the three never
    disagree. Every way of creating comparisons (the build, benchmarks, tests) goes through it.
    """
    for comparison in comparisons:
        ids = [int(i) for i in comparison.candidate_ids]
        if len(set(ids)) != len(ids):
            raise ValueError(f"candidate ids {ids} name a candidate twice")
        comparison.candidate_ids = ids
        comparison.candidate_key = Comparison.key_for(ids)
    created = Comparison.objects.bulk_create(comparisons, batch_size=BULK_BATCH)
    ComparisonCandidate.objects.bulk_create(
        (
            ComparisonCandidate(comparison_id=c.pk, candidate_id=cid, position=n)
            for c in created
            for n, cid in enumerate(c.candidate_ids)
        ),
        batch_size=BULK_BATCH,
    )
    return created
