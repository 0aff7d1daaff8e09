"""One full round of the loop on a world (prompts + gold judge + starting policy).

import prompts → generate candidates → build comparisons → simulated labelers → export →
reward model → PPO → sample from the new policy, then a report against the gold judge.
Glue over the commands and services (it touches Django); the numbers come from
`training/evaluation.py`.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from django.core.management import call_command
from django.utils import timezone

from annotation.models import Annotation
from annotation.prompts import prompt_model_input
from annotation.services.imports import parse_prompt_file, prompts_import
from annotation.services.projects import project_create
from lineage.models import ModelVersion, TrainingRun


@dataclass(frozen=True)
class LoopConfig:
    """Sizes of one round; the defaults run the demo world in minutes on a 2-core CPU."""

    prompts: int = 236  # prompts labeled (and used for PPO)
    eval_prompts: int = 48  # held-out prompts for gold scores and win rate
    num_candidates: int = 4  # K per comparison
    overlap: int = 2  # simulated annotations per comparison
    labelers: int = 4  # simulated labelers
    noise: float = 0.05  # Plackett-Luce temperature of the simulated labelers (careful ones)
    # Careful labelers tie answers the judge scores equal (within this), as people mark
    # "equally good"; without ties every such pair would be a coin flip in the export.
    tie_epsilon: float | None = 0.0
    max_new_tokens: int = 40  # tokens per sampled answer (candidates, PPO, evaluation)
    policy_steps: int | None = None  # demo policy build steps (None: the full demo build)
    rm_epochs: float = 4.0  # reward-model epochs
    rm_lr: float = 3e-4  # reward-model learning rate
    rm_batch_size: int = 16
    ppo_episodes: int = 1024  # PPO episodes in total
    ppo_batch_size: int = 32  # episodes per PPO rollout
    ppo_lr: float = 5e-5
    kl_coef: float = 0.1  # a tiny reward model is easy to over-optimize: stay near the start
    seed: int = 0
    # "ppo": reward model + PPO; "dpo": DPO on the round's export in place of both.
    method: str = "ppo"
    dpo_beta: float = 0.1
    dpo_epochs: float = 2.0
    dpo_lr: float = 1e-4
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in ("ppo", "dpo"):
            raise ValueError(f"method must be 'ppo' or 'dpo', got {self.method!r}")


# What each agreement/accuracy figure of report.json measures, and its tie rule; written
# into the report beside the figures.
REPORT_DEFINITIONS = {
    "rm_accuracy": "share of the export's test pairs (all pairs without a test split) that "
    "the judge orders, pairs it scores equal left out, which the reward model orders the "
    "same way; equal rewards count 1/2",
    "rm_accuracy_vs_labels": "share of the export's test pairs (the labels' chosen over "
    "rejected) that the reward model orders the same way; equal rewards count 1/2",
    "label_agreement_with_judge": "share of exported pairs (the labels' chosen over "
    "rejected) the judge orders the same way; pairs the judge scores equal count 1/2",
    "win_rate_vs_start": "share of held-out prompts where the judge scores the new "
    "policy's answer above the start policy's; equal scores count 1/2",
}


def _run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def loop_run(
    *,
    out_dir: str | Path,
    judge_spec: str = "training.demo_world.judge:judge",
    prompts_file: str | Path | None = None,
    policy: str | Path | None = None,
    config: LoopConfig = LoopConfig(),
    log=print,
) -> dict:
    """Run one round and return the report (also written to out_dir/report.json)."""
    from annotation.datafiles.jsonl import read_jsonl
    from annotation.services.exports import ExportOptions, export_create
    from training.evaluation import (
        mean,
        pairs_agreement_with_judge,
        plot_overoptimization,
        sample_answers,
        win_rate,
    )
    from training.ppo import load_callable

    started = time.perf_counter()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    judge = load_callable(judge_spec)

    # ------------------------------------------------------------------ world
    if prompts_file is None:
        from training.demo_world import write_prompts_jsonl

        prompts_file = write_prompts_jsonl(out / "prompts.jsonl")
    records = parse_prompt_file(prompts_file)
    needed = config.prompts + config.eval_prompts
    if len(records) < needed:
        raise ValueError(f"{prompts_file} has {len(records)} prompts; this loop needs {needed}")
    train_records, eval_records = records[: config.prompts], records[config.prompts : needed]
    eval_prompts = [prompt_model_input(r.messages, is_chat=r.is_chat) for r in eval_records]

    if policy is None:
        from training.management.commands.build_demo_policy import demo_policy_dir

        steps = ["--steps", str(config.policy_steps)] if config.policy_steps else []
        log(_run("build_demo_policy", *steps).strip())
        policy = demo_policy_dir()
    policy = str(policy)

    slug = f"loop-{timezone.now():%Y%m%d-%H%M%S}"
    project = project_create(
        slug=slug,
        name=f"Loop round {slug}",
        num_candidates=config.num_candidates,
        overlap=config.overlap,
    )
    prompts_import(project=project, records=train_records, source=Path(prompts_file).name)
    log(f"[loop] project {slug}: {len(train_records)} prompts, {len(eval_records)} held out")

    # ------------------------------------------------------------------ candidates and labels
    log(
        _run(
            "generate_candidates",
            slug,
            "--model",
            policy,
            "--max-new-tokens",
            str(config.max_new_tokens),
            "--seed",
            str(config.seed),
            "--no-progress",
        ).strip()
    )
    log(_run("build_comparisons", slug).strip())
    ties = [] if config.tie_epsilon is None else ["--tie-epsilon", str(config.tie_epsilon)]
    simulated = _run(
        "simulate_labelers",
        slug,
        "--judge",
        judge_spec,
        "--labelers",
        str(config.labelers),
        "--noise",
        str(config.noise),
        "--seed",
        str(config.seed),
        "--verbosity",
        "0",
        *ties,
    )
    log(f"[loop] simulated labelers: {simulated.strip()}")

    # ------------------------------------------------------------------ export, reward model, PPO
    export = export_create(project=project, options=ExportOptions(), out_dir=out / "export")
    log(f"[loop] export {export.pk}: {export.rows} pairs")
    if config.method == "dpo":  # DPO on this export in place of reward model + PPO
        from training.loop_dpo import dpo_round

        return dpo_round(
            run=_run, log=log, out=out, slug=slug, project=project, export=export,
            policy=policy, judge=judge, eval_prompts=eval_prompts, config=config,
            started=started, definitions=REPORT_DEFINITIONS,
        )  # fmt: skip
    rm_dir, ppo_dir = out / "reward-model", out / "policy"
    log(
        _run(
            "train_reward_model",
            "--export",
            str(export.pk),
            "--base-model",
            policy,
            "--out",
            str(rm_dir),
            "--epochs",
            str(config.rm_epochs),
            "--lr",
            str(config.rm_lr),
            "--batch-size",
            str(config.rm_batch_size),
            "--seed",
            str(config.seed),
        ).strip()
    )
    log(
        _run(
            "train_ppo",
            "--policy",
            policy,
            "--reward-model",
            str(rm_dir),
            "--prompts",
            slug,
            "--out",
            str(ppo_dir),
            "--judge",
            judge_spec,
            "--total-episodes",
            str(config.ppo_episodes),
            "--batch-size",
            str(config.ppo_batch_size),
            "--lr",
            str(config.ppo_lr),
            "--response-length",
            str(config.max_new_tokens),
            "--kl-coef",
            str(config.kl_coef),
            "--seed",
            str(config.seed),
        ).strip()
    )
    ppo_run = TrainingRun.objects.filter(kind=TrainingRun.Kind.PPO, source__project=project).latest(
        "id"
    )
    new_version = ppo_run.output_model

    # ------------------------------------------------------------------ next round's candidates
    log(
        _run(
            "generate_candidates",
            slug,
            "--model",
            str(ppo_dir),
            "--name",
            new_version.name,
            "--max-new-tokens",
            str(config.max_new_tokens),
            "--seed",
            str(config.seed + 1),
            "--no-progress",
        ).strip()
    )

    # ------------------------------------------------------------------ report
    before = sample_answers(
        policy, eval_prompts, max_new_tokens=config.max_new_tokens, seed=config.seed
    )
    after = sample_answers(
        str(ppo_dir), eval_prompts, max_new_tokens=config.max_new_tokens, seed=config.seed
    )
    pairs = read_jsonl(Path(export.path) / "pairs.jsonl")
    test_pairs = [p for p in pairs if p.get("split") == "test"] or pairs
    rm_accuracy = _rm_accuracy_vs_judge(rm_dir, judge, test_pairs)
    history = ppo_run.metrics_history
    # k3 never goes negative, unlike the k1 sum PPO penalises with (noisy near zero KL).
    kl_key = "kl_k3" if "kl_k3" in ppo_run.metrics else "kl"
    plot = plot_overoptimization(history, out / "reward_vs_kl.png", kl_key=kl_key, rm_key="score")
    report = {
        "project": slug,
        "rm_accuracy": rm_accuracy,
        "rm_accuracy_vs_labels": ppo_run.input_models.filter(kind=ModelVersion.Kind.REWARD)
        .values_list("produced_by__metrics__accuracy", flat=True)
        .first(),
        "label_agreement_with_judge": pairs_agreement_with_judge(
            judge, pairs, judge_ties="half"
        ).rate,
        "gold_before": mean(judge(eval_prompts, before)),
        "gold_after": mean(judge(eval_prompts, after)),
        "win_rate_vs_start": win_rate(judge, eval_prompts, after, before),
        "kl": ppo_run.metrics.get(kl_key),
        "rm_score_first": history[0].get("score") if history else None,
        "rm_score_last": history[-1].get("score") if history else None,
        "annotations": Annotation.objects.filter(comparison__project=project).count(),
        "export_id": export.pk,
        "pairs": export.rows,
        "policy_before": policy,
        "policy_after": str(ppo_dir),
        "policy_version": new_version.name,
        "lineage": [v.name for v in new_version.lineage()],
        "plot": str(plot) if plot else None,
        "seconds": round(time.perf_counter() - started, 1),
        "config": asdict(config),
        "samples": [
            {"prompt": p, "before": b, "after": a}
            for p, b, a in list(zip(eval_prompts, before, after))[:8]
        ],
        "definitions": REPORT_DEFINITIONS,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def _rm_accuracy_vs_judge(rm_dir: Path, judge, pairs: list[dict]) -> float:
    """Reward-model agreement with the gold judge on held-out pairs (see REPORT_DEFINITIONS)."""
    from training.evaluation import agreement_with_judge, text_of
    from training.reward.scoring import load_reward_model

    scorer = load_reward_model(rm_dir)
    prompts = [p["prompt"] for p in pairs]
    a, b = [text_of(p["chosen"]) for p in pairs], [text_of(p["rejected"]) for p in pairs]
    gold_a, gold_b = judge(prompts, a), judge(prompts, b)
    rm_a, rm_b = scorer.score(prompts, a), scorer.score(prompts, b)
    return agreement_with_judge(
        [ga - gb for ga, gb in zip(gold_a, gold_b)],
        [ra - rb for ra, rb in zip(rm_a, rm_b)],
        judge_ties="exclude",
    ).rate
