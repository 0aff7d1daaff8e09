"""Build comparisons (the unit of labeling work) from the candidates of each prompt.

Two strategies (SPEC section 11, `build_comparisons --strategy`):

- `random` deals each prompt's pool into groups of K, mixing models; priority 0.
- `uncertainty` takes reward-model scores of every pooled candidate (computed by the
  training side, `training.active`: this app imports no ML) and groups, per prompt, the K
  candidates whose order the model is least sure of first; the comparisons of all prompts
  then get a queue priority, most uncertain first within a per-cluster share
  (`annotation.rules.active`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from django.db import transaction

from annotation.errors import ServiceValidationError
from annotation.models import (
    Candidate,
    Comparison,
    ComparisonCandidate,
    Project,
    Prompt,
    TaskType,
)
from annotation.rules.active import (
    DEFAULT_MAX_SHARE,
    Scored,
    informative_order,
    priorities,
    uncertain_groups,
    validate_max_share,
)

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


def comparison_pool(*, project: Project, models: list[str] | None = None):
    """Candidates of the project not yet in any comparison (of these models, if given).

    What `comparisons_build` groups, and what the training side scores before an
    uncertainty build.
    """
    pool = Candidate.objects.filter(prompt__project=project, comparisons__isnull=True)
    if models:
        from django.db.models import Q

        pool = pool.filter(Q(model_version__name__in=models) | Q(model_name__in=models))
    return pool


@transaction.atomic
def comparisons_build(
    *,
    project: Project,
    models: list[str] | None = None,
    scores: Mapping[int, Sequence[float]] | None = None,
    max_share: float = DEFAULT_MAX_SHARE,
) -> BuildResult:
    """Group each prompt's candidates not yet in a comparison into comparisons of K.

    `models` restricts the pool to candidates of those model versions / model names.
    Never builds the same candidate set twice for a prompt (a constraint backs this).

    With `scores` (candidate id -> one reward per model, the same models for every
    candidate) the build is by uncertainty: every pooled candidate must have scores, else
    nothing is built; `max_share` caps the share of one prompt cluster (prompt `source`)
    in every prefix of the serving order.
    """
    if project.task_type == TaskType.DEMONSTRATION:
        if scores is not None:
            raise ServiceValidationError(
                "demonstration tasks are one per prompt: there is no order to be unsure of",
                {"scores": ["not for demonstration projects"]},
            )
        return _demonstration_tasks_build(project=project, models=models)
    k = project.num_candidates
    pool = comparison_pool(project=project, models=models)
    if scores is not None:
        return _build_by_uncertainty(project, pool, scores, max_share)
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


def _build_by_uncertainty(
    project: Project, pool, scores: Mapping[int, Sequence[float]], max_share: float
) -> BuildResult:
    try:
        validate_max_share(max_share)
    except ValueError as exc:
        raise ServiceValidationError(str(exc), {"max_share": [str(exc)]}) from None
    k = project.num_candidates
    by_prompt: dict[int, list[tuple[int, list[float]]]] = defaultdict(list)
    cluster_of: dict[int, str] = {}
    width = None
    for candidate_id, prompt_id, source in pool.values_list(
        "id", "prompt_id", "prompt__source"
    ).iterator(chunk_size=BULK_BATCH):
        values = scores.get(candidate_id)
        if not values:
            message = f"candidate {candidate_id} has no reward-model score"
            raise ServiceValidationError(message, {"scores": [message]})
        if width is None:
            width = len(values)
        elif len(values) != width:
            message = f"candidate {candidate_id} has {len(values)} scores, others {width}"
            raise ServiceValidationError(message, {"scores": [message]})
        by_prompt[prompt_id].append((candidate_id, [float(v) for v in values]))
        cluster_of[prompt_id] = source or f"prompt:{prompt_id}"
    existing_keys = set(
        Comparison.objects.filter(prompt_id__in=list(by_prompt)).values_list(
            "prompt_id", "candidate_key"
        )
    )
    result = BuildResult()
    built: dict[tuple[int, str], tuple[int, list[int]]] = {}
    items = []
    for prompt_id, candidates in sorted(by_prompt.items()):
        groups = uncertain_groups(candidates, k)
        if not groups:
            result.prompts_short += 1
        result.leftover += len(candidates) - k * len(groups)
        for group, uncertainty in groups:
            key = Comparison.key_for(group)
            if (prompt_id, key) in existing_keys:
                continue
            existing_keys.add((prompt_id, key))
            built[(prompt_id, key)] = (prompt_id, group)
            items.append(Scored((prompt_id, key), cluster_of[prompt_id], uncertainty))
    order = informative_order(items, max_share=max_share)
    new = [
        Comparison(
            project=project,
            prompt_id=built[key][0],
            candidate_ids=built[key][1],
            candidate_key=key[1],
            required=project.overlap,
            priority=priority,
        )
        for key, priority in zip(order, priorities(len(order)))
    ]
    result.created = len(comparisons_insert(comparisons=new))
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
        result.created += len(comparisons_insert(comparisons=new))
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
