"""`loop --method dpo`: the round's export trains the policy directly with DPO (glue: uses Django).

In place of reward model + PPO: `train_dpo` from the start policy on the round's pairs export,
then the next round's candidates and the same gold-judge report as the PPO round, with the
labelers' agreement, the held-out KL and shortcut flags, and the verification labeling round
(labeler_win_rate, leaderboard). Figures that only exist with a reward model (rm_accuracy,
the PPO-step KL and RM scores, over-optimisation) are None. One round only.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lineage.models import TrainingRun


def dpo_round(
    *,
    run,
    log,
    out: Path,
    slug: str,
    project,
    export,
    policy: str,
    judge,
    judge_spec: str,
    eval_records: list,
    eval_prompts: list,
    config,
    started: float,
    definitions: dict,
    building: dict | None = None,
) -> dict[str, Any]:
    """Train with DPO on `export`, sample the new policy, write and return report.json."""
    from annotation.datafiles.jsonl import read_jsonl
    from annotation.models import Annotation
    from training.evaluation import (
        EVAL_TEMPERATURE,
        heldout_gold_figures,
        heldout_kl,
        mean,
        near_duplicate_share,
        pairs_agreement_with_judge,
        sample_answer_sets,
    )
    from training.loop import _labeler_round, _round_line, as_flags, dpo_settings
    from training.management.commands.train_reward_model import export_labeler_agreement

    dpo_dir = out / "policy"
    log(
        run(
            "train_dpo",
            "--export",
            str(export.pk),
            "--policy",
            policy,
            "--out",
            str(dpo_dir),
            *as_flags(dpo_settings(config)),
            "--max-length",
            "none",
            "--no-resume",
        ).strip()
    )
    dpo_run = TrainingRun.objects.filter(kind=TrainingRun.Kind.DPO, source__project=project).latest(
        "id"
    )
    new_version = dpo_run.output_model
    log(
        run(
            "generate_candidates",
            slug,
            "--model",
            str(dpo_dir),
            "--name",
            new_version.name,
            "--max-new-tokens",
            str(config.max_new_tokens),
            "--seed",
            str(config.seed + 1),
            "--no-progress",
        ).strip()
    )
    before, after = (
        sample_answer_sets(
            model,
            eval_prompts,
            samples=config.eval_samples,
            max_new_tokens=config.max_new_tokens,
            seed=config.seed,
        )
        for model in (policy, str(dpo_dir))
    )
    gold = heldout_gold_figures(
        [judge(eval_prompts, answers) for answers in before],
        [judge(eval_prompts, answers) for answers in after],
        seed=config.seed,
    )
    pairs = read_jsonl(Path(export.path) / "pairs.jsonl")
    every_prompt = [p for _ in after for p in eval_prompts]
    every_answer = [a for answers in after for a in answers]
    figures = {
        **(building or {}),  # how the round's comparisons were built
        "export_id": export.pk,
        "pairs": export.rows,
        "labeler_agreement": export_labeler_agreement(export),
        "label_agreement_with_judge": pairs_agreement_with_judge(
            judge, pairs, judge_ties="half"
        ).rate,
        **gold,
        "kl_heldout": heldout_kl(
            str(dpo_dir),
            policy,
            every_prompt,
            every_answer,
            finished=[f for flags in after.finished for f in flags],
            answer_ids=[ids for answers in after.token_ids for ids in answers],
            temperature=EVAL_TEMPERATURE,
        ),
        "near_duplicate_share": mean([near_duplicate_share(answers) for answers in after]),
        "dpo_eval_accuracy": dpo_run.metrics.get("eval_accuracy"),
    }
    this_round = {
        "round": 1,
        "policy_before": policy,
        "policy_after": str(dpo_dir),
        "policy_version": new_version.name,
        **figures,
    }
    log(_round_line(this_round))
    labeling = _labeler_round(
        slug=slug,
        eval_records=eval_records,
        start=policy,
        new=str(dpo_dir),
        new_name=new_version.name,
        judge_spec=judge_spec,
        config=config,
        log=log,
    )
    report = {
        "method": "dpo",
        "project": slug,
        "rounds": [this_round],
        "rm_accuracy": None,
        "rm_accuracy_vs_labels": None,
        **figures,
        **labeling,
        "kl": None,
        "rm_score_first": None,
        "rm_score_last": None,
        "dpo_loss_first": dpo_run.metrics.get("first_loss"),
        "dpo_loss_last": dpo_run.metrics.get("last_loss"),
        "annotations": Annotation.objects.filter(comparison__project=project).count(),
        "policy_before": policy,
        "policy_after": str(dpo_dir),
        "policy_version": new_version.name,
        "lineage": [v.name for v in new_version.lineage()],
        "plot": None,
        "seconds": round(time.perf_counter() - started, 1),
        "config": asdict(config),
        "samples": [
            {"prompt": p, "before": b, "after": a}
            for p, b, a in list(zip(eval_prompts, before[0], after[0]))[:8]
        ],
        "definitions": {
            **definitions,
            "dpo_eval_accuracy": "share of the export's test pairs where the DPO implicit reward "
            "(beta * log-ratio to the start policy) orders chosen above rejected",
        },
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return report
