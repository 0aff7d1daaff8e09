"""`loop --method dpo`: the round's export trains the policy directly with DPO (glue: uses Django).

In place of reward model + PPO: `train_dpo` from the start policy on the round's pairs export,
then the next round's candidates and the same gold-judge report as the PPO round. Figures that
only exist with a reward model (rm_accuracy, kl, rm scores) are None.
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
    eval_prompts: list,
    config,
    started: float,
    definitions: dict,
) -> dict[str, Any]:
    """Train with DPO on `export`, sample the new policy, write and return report.json."""
    from annotation.datafiles.jsonl import read_jsonl
    from annotation.models import Annotation
    from training.evaluation import (
        heldout_gold_figures,
        pairs_agreement_with_judge,
        sample_answer_sets,
    )

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
            "--beta",
            str(config.dpo_beta),
            "--epochs",
            str(config.dpo_epochs),
            "--lr",
            str(config.dpo_lr),
            "--batch-size",
            str(config.rm_batch_size),
            "--max-length",
            "none",
            "--seed",
            str(config.seed),
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
    report = {
        "method": "dpo",
        "project": slug,
        "rm_accuracy": None,
        "rm_accuracy_vs_labels": None,
        "dpo_eval_accuracy": dpo_run.metrics.get("eval_accuracy"),
        "label_agreement_with_judge": pairs_agreement_with_judge(
            judge, pairs, judge_ties="half"
        ).rate,
        **gold,
        "kl": None,
        "rm_score_first": None,
        "rm_score_last": None,
        "dpo_loss_first": dpo_run.metrics.get("first_loss"),
        "dpo_loss_last": dpo_run.metrics.get("last_loss"),
        "annotations": Annotation.objects.filter(comparison__project=project).count(),
        "export_id": export.pk,
        "pairs": export.rows,
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
