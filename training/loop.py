"""The loop on a world (prompts + gold judge + starting policy), one round or `rounds` of them.

import prompts → generate candidates → build comparisons → simulated labelers → export →
reward model → PPO → sample from the new policy, then a report against the gold judge.
Glue over the commands and services (it touches Django); the numbers come from
`training/evaluation.py`.
"""

from __future__ import annotations

import io
import json
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from django.core.management import call_command
from django.utils import timezone

from annotation.models import Annotation
from annotation.prompts import prompt_model_input
from annotation.services.imports import parse_prompt_file, prompts_import
from annotation.services.projects import project_create
from lineage.models import ModelVersion, TrainingRun
from training.evaluation import heldout_gold_figures, mean, prompt_means


@dataclass(frozen=True)
class LoopConfig:
    """Sizes of one round; the defaults run the demo world in minutes on a 2-core CPU."""

    prompts: int = 236  # prompts labeled (and used for PPO)
    eval_prompts: int = 48  # held-out prompts for gold scores and win rate
    # Answers per held-out prompt and policy (seeds seed, seed+1, ...) that gold, win rate
    # and KL average over: with one, a 48-prompt eval set's interval is as wide as the
    # demo world's gains (bench/README.md).
    eval_samples: int = 8
    num_candidates: int = 4  # K per comparison
    overlap: int = 2  # simulated annotations per comparison
    labelers: int = 4  # simulated labelers
    noise: float = 0.05  # Plackett-Luce temperature of the simulated labelers (careful ones)
    # Careful labelers tie answers the judge scores equal (within this), as people mark
    # "equally good"; without ties every such pair would be a coin flip in the export.
    tie_epsilon: float | None = 0.0
    max_new_tokens: int = 40  # tokens per sampled answer (candidates, PPO, evaluation)
    policy_steps: int | None = None  # demo policy build steps (None: the full demo build)
    # Reward model: None scales with the export (training.reward.schedule.scaled_defaults);
    # early stopping keeps the best epoch on the held-out split.
    rm_epochs: float | None = None
    rm_lr: float | None = None
    rm_batch_size: int = 16
    rm_patience: int = 2  # epochs without held-out improvement before the RM stops
    # Stop before PPO when the RM's held-out accuracy (against the labels) is below this.
    min_rm_accuracy: float | None = None
    ppo_episodes: int = 1024  # PPO episodes in total
    ppo_batch_size: int = 32  # episodes per PPO rollout
    ppo_lr: float = 5e-5
    kl_coef: float = 0.1  # a tiny reward model is easy to over-optimize: stay near the start
    # PPO-ptx (training/ppo/ptx.py): with ptx_coef > 0 the LM loss on ptx_data joins every
    # PPO update. ptx_data None: the demo policy's own training corpus when the start policy
    # is the demo policy, none with another policy. Off by default: over 5 seed pairs on
    # the demo world it did not move the gold gain beyond noise (bench/README.md).
    ptx_coef: float = 0.0
    ptx_data: str | None = None
    seed: int = 0
    rounds: int = 1  # label → reward model → PPO rounds, each from the last round's policy
    # "ppo": reward model + PPO; "dpo": DPO on the round's export in place of both.
    method: str = "ppo"
    dpo_beta: float = 0.1
    dpo_epochs: float = 2.0
    dpo_lr: float = 1e-4
    # How each round after the first groups its candidates: "random" (a pool of K per
    # prompt, mixing the new and the previous policy) or "uncertainty" (a pool of 2K per
    # prompt, grouped and served by the previous round's reward model, most uncertain
    # first, with the same label budget a random round has). Round 1 has no reward model
    # yet and is always random.
    strategy: str = "random"
    # torch's CPU threads for the whole run (None or 0: torch's default). CPU results depend
    # on the thread count, so with it fixed a run gives the same figures on any core count;
    # for the demo world's tiny models one thread is also the fastest. Raise it for a large
    # policy.
    threads: int | None = 1
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from annotation.rules.active import validate_strategy

        if self.method not in ("ppo", "dpo"):
            raise ValueError(f"method must be 'ppo' or 'dpo', got {self.method!r}")
        if self.method == "dpo" and self.rounds != 1:
            raise ValueError("--method dpo runs one round (--rounds 1)")
        validate_strategy(self.strategy)
        if self.eval_samples < 1:
            raise ValueError(f"eval_samples must be at least 1, got {self.eval_samples}")
        if self.ptx_coef < 0:
            raise ValueError(f"ptx_coef must be 0 or more, got {self.ptx_coef}")
        if self.threads is not None and self.threads < 0:
            raise ValueError(f"threads must be 0 or more, got {self.threads}")
        if self.strategy == "uncertainty" and self.rounds < 2:
            raise ValueError(
                "--strategy uncertainty needs --rounds 2 or more: round 1 has no reward "
                "model yet and is built at random"
            )


# What each agreement/accuracy figure of report.json measures, and its tie rule; written
# into the report beside the figures.
REPORT_DEFINITIONS = {
    "labeler_win_rate": "share of the verification round's comparisons (one new-policy and "
    "one start-policy answer per held-out prompt, each policy under a seed of its own at the "
    "eval temperature, ranked by the simulated labelers; prompts where both answers are the "
    "same text have none) that rank the new policy's answer first; ties count 1/2",
    "rm_accuracy": "share of the export's test pairs (all pairs without a test split) that "
    "the judge orders, pairs it scores equal left out, which the reward model orders the "
    "same way; equal rewards count 1/2",
    "rm_accuracy_vs_labels": "share of the export's test pairs (the labels' chosen over "
    "rejected) that the reward model orders the same way; equal rewards count 1/2",
    "rm_selection_split": "the pairs the reward model's epoch (rm_best_epoch) was picked on: "
    "validation, a tenth of the training prompts held out, so the test pairs behind "
    "rm_accuracy only report; test when the export had too few to spare (the accuracies are "
    "then optimistic)",
    "label_agreement_with_judge": "share of exported pairs (the labels' chosen over "
    "rejected) the judge orders the same way; pairs the judge scores equal count 1/2",
    "win_rate_vs_start": "mean over held-out prompts of the share of (new-policy answer, "
    "start-policy answer) pairs of the prompt, its eval_samples answers of each all against "
    "all, where the judge scores the new one higher; equal scores count 1/2",
    "win_rate_ci": "95% percentile bootstrap interval (2000 resamples of the held-out "
    "prompts) of win_rate_vs_start",
    "gold_ci": "95% paired percentile bootstrap interval (2000 resamples of the held-out "
    "prompts, each prompt's before/after pair kept together) of gold_after - gold_before; "
    "gold is the judge's mean over the eval_samples answers per prompt, then over prompts",
    "labeler_agreement": "for every two labelers of a comparison, in both directions: share "
    "of the candidate pairs the first orders strictly that the second orders the same way; "
    "a tie by the second counts 1/2 (the ceiling of rm_accuracy_vs_labels)",
    "kl_heldout": "mean over the new policy's sampled held-out answers (eval_samples per "
    "prompt) of sum_t log pi(y_t) - log pi_ref(y_t) (k1 estimator of KL(pi || pi_ref), nats "
    "per answer), both models' logits divided by the sampling temperature; EOS counted where "
    "the answer ended on it",
    "overoptimization": "flagged when, over the last third of PPO steps, the running-mean RM "
    "score's least-squares slope is > 0 and the gold score's < 0; gold_peak_step is where the "
    "running-mean gold score peaked",
    "best_gold_step": "the PPO eval step (every eval_every steps and the last) whose held-out "
    "eval_gold, the judge's mean score on the PPO run's held-out prompts, was the highest "
    "(ties: the earlier step; step 0, the start policy, is not a candidate); its policy is "
    "saved at best_gold_path (best_gold.json beside it has the figures and the step-0 baseline)",
    "rm_length_correlation": "Pearson correlation of the RM score with the word count of the "
    "new policy's held-out answers, all eval_samples sets (a length shortcut shows as a large "
    "positive value)",
    "near_duplicate_share": "mean over the new policy's held-out answer sets (one answer per "
    "prompt each) of the share of answers whose word-3-gram Jaccard similarity with another "
    "answer of the set is >= 0.8",
    "strategy": "how the round's comparisons were built: random (round 1 always) or "
    "uncertainty (the previous round's reward model groups, per prompt, the K candidates whose "
    "order it is least sure of and the queue serves them most uncertain first); pool_per_prompt "
    "is the mean number of unused candidates per prompt the round built from, label_budget the "
    "most annotations the round's labelers gave (None: every comparison, overlap times)",
}


def _run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# ---------------------------------------------------------------------- trainer settings
# What the loop hands each trainer, by the trainer's config field, and the loop's name for
# it: a setting that cannot train is named as the user gave it (`--ppo-batch-size`, not
# train_ppo's `batch_size`).
RM_FLAGS = {
    "epochs": "--rm-epochs",
    "lr": "--rm-lr",
    "batch_size": "rm_batch_size",
    "early_stopping_patience": "--rm-patience",
    "seed": "--seed",
}
PPO_FLAGS = {
    "total_episodes": "--ppo-episodes",
    "batch_size": "--ppo-batch-size",
    "lr": "--ppo-lr",
    "response_length": "--max-new-tokens",
    "kl_coef": "--kl-coef",
    "seed": "--seed",
    "ptx_data": "--ptx-data",
    "ptx_coef": "--ptx-coef",
}
DPO_FLAGS = {
    "beta": "--dpo-beta",
    "epochs": "--dpo-epochs",
    "lr": "--dpo-lr",
    "batch_size": "rm_batch_size",
    "seed": "--seed",
}


def rm_settings(config: LoopConfig, *, seed: int, epochs=None, lr=None) -> dict:
    """train_reward_model's settings (RewardConfig fields); epochs and lr scale with the
    export unless given, None: the trainer's default."""
    return {
        "epochs": epochs,
        "lr": lr,
        "batch_size": config.rm_batch_size,
        "early_stopping_patience": config.rm_patience,
        "seed": seed,
    }


def ppo_settings(config: LoopConfig, *, seed: int, ptx_data=None) -> dict:
    """train_ppo's settings (PPOConfig fields); PPO-ptx only with `ptx_data`."""
    settings = {
        "total_episodes": config.ppo_episodes,
        "batch_size": config.ppo_batch_size,
        "lr": config.ppo_lr,
        "response_length": config.max_new_tokens,
        "kl_coef": config.kl_coef,
        "seed": seed,
    }
    if ptx_data is not None:
        settings |= {"ptx_data": str(ptx_data), "ptx_coef": config.ptx_coef}
    return settings


def dpo_settings(config: LoopConfig) -> dict:
    """train_dpo's settings (DPOTrainConfig fields)."""
    return {
        "beta": config.dpo_beta,
        "epochs": config.dpo_epochs,
        "lr": config.dpo_lr,
        "batch_size": config.rm_batch_size,
        "seed": config.seed,
    }


def as_flags(settings: dict) -> list[str]:
    """A trainer's settings as its command's flags (`batch_size` -> `--batch-size 16`)."""
    return [a for k, v in settings.items() for a in ("--" + k.replace("_", "-"), str(v))]


def check_trainer_settings(config: LoopConfig) -> None:
    """Build the configs the loop's trainers get, and check what PPO can check without data,
    before anything is written; ValueError naming the loop's flags. Bad PPO settings used to
    stop the loop only after it had built the project, labeled, exported and trained the
    reward model, leaving export/ and reward-model/ behind."""
    from training.distributed import world_size

    try:
        if config.method == "dpo":
            from training.dpo import DPOTrainConfig

            flags = DPO_FLAGS
            DPOTrainConfig.from_options(dpo_settings(config))
            return
        from training.ppo.config import PPOConfig
        from training.ppo.train import check_setup
        from training.reward.config import RewardConfig

        flags = RM_FLAGS
        RewardConfig.from_options(
            rm_settings(config, seed=config.seed, epochs=config.rm_epochs, lr=config.rm_lr)
        )
        flags = PPO_FLAGS
        ppo = PPOConfig.from_options(ppo_settings(config, seed=config.seed))
        # PPO trains on the labeled prompts, holding some out for its evals.
        check_setup(replace(ppo, eval_every=0), config.prompts, world_size())
        if ppo.eval_every and ppo.num_eval_prompts >= config.prompts:
            raise ValueError(
                f"--num-prompts {config.prompts} is too few for PPO, which holds "
                f"{ppo.num_eval_prompts} of them out for its evals: give more"
            )
    except ValueError as exc:
        fields = re.compile(r"\b(" + "|".join(map(re.escape, flags)) + r")\b")
        raise ValueError(fields.sub(lambda m: flags[m.group(1)], str(exc))) from None


# What a loop run writes into its out folder (round-N/ folders too): an earlier run's are
# replaced with `overwrite`, else the loop refuses to start (an export folder is never
# written into twice).
RUN_ENTRIES = (
    "report.json",
    "prompts.jsonl",
    "ptx.jsonl",
    "export",
    "reward-model",
    "policy",
    "reward_vs_kl.png",
)


def previous_run_entries(out: Path, *, keep: tuple[Path, ...] = ()) -> list[Path]:
    """The entries of `out` an earlier loop run wrote (`keep`: inputs, such as a start policy
    that is the earlier run's `policy/`, to leave alone)."""
    if not out.is_dir():
        return []
    kept = {p.resolve() for p in keep}
    found = [out / name for name in RUN_ENTRIES if (out / name).exists()]
    found += sorted(p for p in out.glob("round-*") if p.is_dir())
    return [p for p in found if p.resolve() not in kept]


def clear_previous_run(out: Path, *, overwrite: bool, keep: tuple[Path, ...] = ()) -> None:
    """Remove an earlier run's entries from `out` with `overwrite`; without, refuse (ValueError
    naming them) before anything is written."""
    import shutil

    previous = previous_run_entries(out, keep=keep)
    if not previous:
        return
    for path in previous:
        inside = [p for p in keep if path.resolve() in p.resolve().parents]
        if inside:
            raise ValueError(
                f"{inside[0]} is inside {path}, which replacing the earlier run would delete: "
                "copy it elsewhere or choose another --out"
            )
    if not overwrite:
        names = ", ".join(p.name for p in previous[:4]) + (", ..." if len(previous) > 4 else "")
        raise ValueError(
            f"{out} holds an earlier loop run ({names}): pass --overwrite to replace it, "
            "or choose another --out"
        )
    for path in previous:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def refuse_inputs_it_writes(out: Path, inputs: tuple[Path, ...], config: LoopConfig) -> None:
    """ValueError, before anything is written, for an input inside a folder this run trains
    into: `--policy OUT/policy` with one round is where the new policy goes, so PPO (or DPO)
    would train over its own start policy and the report measure KL against the result."""
    rounds = (
        [out] if config.rounds == 1 else [out / f"round-{n}" for n in range(1, config.rounds + 1)]
    )
    written = [r / name for r in rounds for name in ("policy", "reward-model", "export")]
    for given in inputs:
        path = given.expanduser().resolve()
        for folder in written:
            if path == folder.resolve() or folder.resolve() in path.parents:
                raise ValueError(
                    f"{given} is where this run writes its {folder.name}: copy it elsewhere "
                    f"first (cp -r {given} {out.parent / (out.name + '-start')}) and pass the copy"
                )


def loop_run(
    *,
    out_dir: str | Path,
    judge_spec: str = "training.demo_world.judge:judge",
    prompts_file: str | Path | None = None,
    policy: str | Path | None = None,
    config: LoopConfig = LoopConfig(),
    overwrite: bool = False,
    log=print,
) -> dict:
    """Run `config.rounds` rounds and return the report (also written to out_dir/report.json).

    Each round: candidates → comparisons (`_build_round`: at random, or with `strategy`
    "uncertainty" after round 1 by the previous reward model over a 2K pool) → simulated
    labels → export of all labels so far → reward model (`_reward_and_ppo`) → PPO from the
    round's policy → candidates of the new policy mixed with the round's policy's for the
    next round. Then a fresh labeling round on
    the held-out prompts (new vs start policy) and the report against the gold judge.
    Runs on `config.threads` CPU threads. An earlier run in out_dir is replaced with
    `overwrite`, else refused (`clear_previous_run`).
    """
    from training.modeling import torch_threads

    check_trainer_settings(config)
    inputs = tuple(Path(p) for p in (prompts_file, policy, config.ptx_data) if p is not None)
    refuse_inputs_it_writes(Path(out_dir), inputs, config)
    clear_previous_run(Path(out_dir), overwrite=overwrite, keep=inputs)
    with torch_threads(config.threads):
        return _loop_run(
            out_dir=out_dir,
            judge_spec=judge_spec,
            prompts_file=prompts_file,
            policy=policy,
            config=config,
            log=log,
        )


def _loop_run(*, out_dir, judge_spec, prompts_file, policy, config: LoopConfig, log) -> dict:
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

    ptx_data = resolve_ptx_data(config, out, demo_policy=policy is None)
    if policy is None:
        from training.management.commands.build_demo_policy import demo_policy_dir

        steps = ["--steps", str(config.policy_steps)] if config.policy_steps else []
        log(_run("build_demo_policy", *steps).strip())
        policy = demo_policy_dir()
    policy = str(policy)

    slug = f"loop-{timezone.now():%Y%m%d-%H%M%S}"
    project = project_create(
        slug=slug,
        name=f"Loop {slug}",
        num_candidates=config.num_candidates,
        overlap=config.overlap,
    )
    prompts_import(project=project, records=train_records, source=Path(prompts_file).name)
    log(f"[loop] project {slug}: {len(train_records)} prompts, {len(eval_records)} held out")

    samples: dict[str, list[list[str]]] = {}
    before = sample_answers_cached(policy, eval_prompts, config, samples)
    gold_start = [judge(eval_prompts, answers) for answers in before]
    log(_generate(slug, policy, config, seed=config.seed))

    rounds: list[dict] = []
    current = policy
    stopped = None
    previous_rm = None  # the last round's reward model: it builds by uncertainty
    for number in range(1, config.rounds + 1):
        round_dir = out / f"round-{number}" if config.rounds > 1 else out
        log(f"[loop] round {number} of {config.rounds}: policy {current}")
        building = _build_round(project, config, previous_rm, log=log)
        budget = building["label_budget"]
        log(
            f"[loop] simulated labelers: "
            f"{_simulate(slug, judge_spec, config, number, max_annotations=budget)}"
        )
        if config.method == "dpo":  # DPO on this round's export in place of reward model + PPO
            from annotation.services.exports import ExportOptions, export_create
            from training.loop_dpo import dpo_round

            export = export_create(project=project, options=ExportOptions(), out_dir=out / "export")
            log(f"[loop] export {export.pk}: {export.rows} pairs")
            return dpo_round(
                run=_run, log=log, out=out, slug=slug, project=project, export=export,
                policy=policy, judge=judge, judge_spec=judge_spec, eval_records=eval_records,
                eval_prompts=eval_prompts, config=config, started=started,
                definitions=REPORT_DEFINITIONS, building=building,
            )  # fmt: skip
        step = _reward_and_ppo(
            project=project,
            policy=current,
            base_model=policy,
            ptx_data=ptx_data,
            judge=judge,
            judge_spec=judge_spec,
            round_dir=round_dir,
            config=config,
            seed=config.seed + 10 * (number - 1),
            log=log,
        )
        figures = {**building, **step["figures"]}
        previous_rm = step["rm_dir"]
        if step["stopped"]:
            stopped = step["stopped"]
            rounds.append({"round": number, "policy_before": current, **figures})
            break
        new_dir, new_version = step["ppo_dir"], step["version"]
        after = sample_answers_cached(str(new_dir), eval_prompts, config, samples)
        figures.update(
            heldout_gold_figures(
                gold_start, [judge(eval_prompts, answers) for answers in after], seed=config.seed
            )
        )
        figures.update(_policy_figures(step, eval_prompts, after, policy, config, round_dir))
        rounds.append(
            {
                "round": number,
                "policy_before": current,
                "policy_after": str(new_dir),
                "policy_version": new_version.name,
                **figures,
            }
        )
        # The next round's candidates: the new policy's mixed with the round's policy's
        # (after the last round: the new policy's only, ready for labelers). By uncertainty
        # the pool is 2K per prompt (K of each policy), for the reward model to choose from.
        if number < config.rounds:
            half = config.num_candidates // 2
            if config.strategy == "uncertainty":
                half = None  # generate_candidates' default: K
            log(
                _generate(
                    slug,
                    str(new_dir),
                    config,
                    seed=config.seed + number,
                    k=half,
                    name=new_version.name,
                )
            )
            log(
                _add_candidates(
                    project,
                    current,
                    config,
                    seed=config.seed + 100 + number,
                    k=config.num_candidates - (half or 0),
                )
            )
        else:
            log(
                _generate(
                    slug, str(new_dir), config, seed=config.seed + number, name=new_version.name
                )
            )
        current = str(new_dir)
        log(_round_line(rounds[-1]))

    report = {
        "project": slug,
        "rounds": rounds,
        "stopped_before_ppo": stopped,
        "policy_before": policy,
        "ptx_data": None if ptx_data is None else str(ptx_data),
        "gold_before": mean(prompt_means(gold_start)),
        "annotations": Annotation.objects.filter(comparison__project=project).count(),
        "config": asdict(config),
        "definitions": REPORT_DEFINITIONS,
    }
    last = rounds[-1]
    # The last round's figures at the top level (one round: the round's own).
    for key, value in last.items():
        if key not in ("round", "policy_before"):
            report.setdefault(key, value)
    if stopped is None:
        labeling = _labeler_round(
            slug=slug,
            eval_records=eval_records,
            start=policy,
            new=current,
            new_name=last["policy_version"],
            judge_spec=judge_spec,
            config=config,
            log=log,
        )
        report.update(labeling)
        new_version = ModelVersion.objects.get(name=last["policy_version"])
        report["lineage"] = [v.name for v in new_version.lineage()]
        report["samples"] = [
            {"prompt": p, "before": b, "after": a}
            for p, b, a in list(
                zip(
                    eval_prompts,
                    before[0],
                    sample_answers_cached(current, eval_prompts, config, samples)[0],
                )
            )[:8]
        ]
    report["seconds"] = round(time.perf_counter() - started, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def resolve_ptx_data(config: LoopConfig, out: Path, *, demo_policy: bool) -> Path | None:
    """What PPO-ptx trains on: `config.ptx_data`, else (the start policy being the demo
    policy) its training corpus, written to out/ptx.jsonl; None when PPO-ptx is off
    (ptx_coef 0, or DPO) or there is nothing to use (another policy, no ptx_data)."""
    if config.ptx_coef == 0 or config.method != "ppo":
        return None
    if config.ptx_data is not None:
        if not Path(config.ptx_data).is_file():  # before minutes of labels and reward model
            raise ValueError(f"--ptx-data {config.ptx_data} is not a file")
        return Path(config.ptx_data)
    if not demo_policy:
        return None
    from training.demo_world.corpus import write_corpus_jsonl
    from training.demo_world.policy import DemoPolicyConfig

    built = DemoPolicyConfig()  # the loop builds the demo policy on the default corpus
    return write_corpus_jsonl(out / "ptx.jsonl", built.corpus_size, seed=built.seed)


def sample_answers_cached(
    policy: str, prompts: list, config: LoopConfig, cache: dict[str, list[list[str]]]
) -> list[list[str]]:
    """The policy's `config.eval_samples` seeded held-out answer sets, sampled once per loop
    run (`cache`) and policy."""
    from training.evaluation import EVAL_TEMPERATURE, sample_answer_sets

    if policy not in cache:
        cache[policy] = sample_answer_sets(
            policy,
            prompts,
            samples=config.eval_samples,
            max_new_tokens=config.max_new_tokens,
            temperature=EVAL_TEMPERATURE,
            seed=config.seed,
        )
    return cache[policy]


def _generate(slug, model, config, *, seed, k=None, name=None, temperature=None) -> str:
    args = ["generate_candidates", slug, "--model", str(model)]
    if name:
        args += ["--name", name]
    if k:
        args += ["--num-candidates", str(k)]
    if temperature is not None:
        args += ["--temperature", str(temperature)]
    args += ["--max-new-tokens", str(config.max_new_tokens), "--seed", str(seed), "--no-progress"]
    return _run(*args).strip()


def _add_candidates(project, model, config, *, seed, k) -> str:
    """`k` more candidates per prompt from a policy that already has candidates here (the
    command skips such prompts, to resume): fresh samples under another seed, texts already
    stored for a prompt skipped."""
    from annotation.models import Prompt
    from annotation.services.imports import CandidateRecord, candidates_import
    from lineage.services import model_version_register
    from training.generation import GenerationConfig, generate_candidates

    version = model_version_register(path=str(model), kind=ModelVersion.Kind.POLICY)
    prompts = list(Prompt.objects.filter(project=project).order_by("id"))
    generation = GenerationConfig(num_candidates=k, max_new_tokens=config.max_new_tokens, seed=seed)
    result = generate_candidates(
        str(model),
        [p.as_model_input() for p in prompts],
        generation,
        model_name=version.name,
        progress=False,
    )
    records = [
        CandidateRecord(
            line=prompt.pk,
            prompt_ref=("id", prompt.pk),
            text=candidate.text,
            model=version.name,
            params=candidate.metadata,
        )
        for prompt, row in zip(prompts, result.candidates)
        for candidate in row
    ]
    created = candidates_import(
        project=project, records=records, model_version=version, where="prompt"
    ).created
    return f"stored {created} more candidates for {len(prompts)} prompts from {version.name}"


def _build_round(project, config: LoopConfig, reward_model_dir, *, log) -> dict:
    """Build the round's comparisons: at random, or (strategy "uncertainty" and a reward
    model from the previous round) by that model's uncertainty, served most uncertain first.

    Returns the round's `strategy`, `pool_per_prompt` (mean unused candidates per prompt
    before the build), `comparisons_built` and `label_budget`: by uncertainty the labelers
    give as many annotations as a random round would (one comparison per prompt, `overlap`
    times), so the pool larger than K costs no extra labels; the comparisons left over stay
    in the queue behind them.
    """
    from annotation.models import Prompt
    from annotation.services.comparisons import comparison_pool, comparisons_build

    prompts = Prompt.objects.filter(project=project).count()
    pooled = comparison_pool(project=project).count()
    uncertain = config.strategy == "uncertainty" and reward_model_dir is not None
    if uncertain:
        from training.active import build_uncertain_comparisons

        result = build_uncertain_comparisons(project, reward_model_dir)
    else:
        result = comparisons_build(project=project)
    strategy = "uncertainty" if uncertain else "random"
    budget = prompts * config.overlap if uncertain else None
    log(
        f"[loop] built {result.created} comparisons ({strategy}) from "
        f"{pooled / max(1, prompts):.1f} candidates per prompt"
        + (f", labels capped at {budget} annotations" if budget else "")
    )
    return {
        "strategy": strategy,
        "pool_per_prompt": pooled / max(1, prompts),
        "comparisons_built": result.created,
        "label_budget": budget,
    }


def _simulate(slug, judge_spec, config, number, *, max_annotations=None) -> str:
    extra = [] if config.tie_epsilon is None else ["--tie-epsilon", str(config.tie_epsilon)]
    if max_annotations is not None:
        extra += ["--max-annotations", str(max_annotations)]
    return _run(
        "simulate_labelers",
        slug,
        "--judge",
        judge_spec,
        "--labelers",
        str(config.labelers),
        "--noise",
        str(config.noise),
        "--seed",
        str(config.seed + 1000 * number),
        "--verbosity",
        "0",
        *extra,
    ).strip()


def _reward_and_ppo(
    *, project, policy, base_model, ptx_data, judge, judge_spec, round_dir, config, seed, log
) -> dict:
    """Export all labels so far, train the reward model (data-scaled epochs and lr, early
    stopping) and, unless its held-out accuracy is below `min_rm_accuracy`, PPO from
    `policy` (PPO-ptx on `ptx_data` when given). The one section a different optimiser
    (DPO, ...) replaces."""
    from annotation.datafiles.jsonl import read_jsonl
    from annotation.services.exports import ExportOptions, export_create
    from training.evaluation import pairs_agreement_with_judge
    from training.reward.schedule import SCALING_RULE, accuracy_warnings, scaled_defaults

    export = export_create(project=project, options=ExportOptions(), out_dir=round_dir / "export")
    pairs = read_jsonl(Path(export.path) / "pairs.jsonl")
    test_pairs = [p for p in pairs if p.get("split") == "test"] or pairs
    train_count = max(1, len(pairs) - len([p for p in pairs if p.get("split") == "test"]))
    epochs, lr = scaled_defaults(train_count, config.rm_batch_size)
    epochs = config.rm_epochs if config.rm_epochs is not None else epochs
    lr = config.rm_lr if config.rm_lr is not None else lr
    log(
        f"[loop] export {export.pk}: {export.rows} pairs; reward model {epochs:g} epochs "
        f"at most, lr {lr:g} ({SCALING_RULE})"
    )
    rm_dir, ppo_dir = round_dir / "reward-model", round_dir / "policy"
    log(
        _run(
            "train_reward_model",
            "--export",
            str(export.pk),
            "--base-model",
            base_model,
            "--out",
            str(rm_dir),
            *as_flags(rm_settings(config, seed=seed, epochs=epochs, lr=lr)),
        ).strip()
    )
    rm_run = TrainingRun.objects.filter(kind=TrainingRun.Kind.REWARD, source__export=export).latest(
        "id"
    )
    accuracy_vs_labels = rm_run.metrics.get("accuracy")
    agreement = rm_run.metrics.get("labeler_agreement")
    figures = {
        "export_id": export.pk,
        "pairs": export.rows,
        "rm_epochs": epochs,
        "rm_lr": lr,
        "rm_best_epoch": rm_run.metrics.get("best_epoch"),
        "rm_epochs_run": rm_run.metrics.get("epochs_run"),
        "rm_selection_split": rm_run.metrics.get("selection_split"),
        "rm_accuracy": _rm_accuracy_vs_judge(rm_dir, judge, test_pairs),
        "rm_accuracy_vs_labels": accuracy_vs_labels,
        "labeler_agreement": agreement,
        "label_agreement_with_judge": pairs_agreement_with_judge(
            judge, pairs, judge_ties="half"
        ).rate,
    }
    warnings = accuracy_warnings(accuracy_vs_labels, agreement)
    for warning in warnings:
        log(f"[loop] {warning}")
    figures["warnings"] = warnings
    result = {"figures": figures, "stopped": None, "rm_dir": rm_dir}
    if config.min_rm_accuracy is not None and (
        accuracy_vs_labels is None or accuracy_vs_labels < config.min_rm_accuracy
    ):
        shown = "n/a" if accuracy_vs_labels is None else f"{accuracy_vs_labels:.3f}"
        result["stopped"] = (
            f"reward-model held-out accuracy {shown} is below --min-rm-accuracy "
            f"{config.min_rm_accuracy:g}: stopped before PPO"
        )
        log(f"[loop] {result['stopped']}")
        return result
    log(
        _run(
            "train_ppo",
            "--policy",
            policy,
            "--reward-model",
            str(rm_dir),
            "--prompts",
            project.slug,
            "--out",
            str(ppo_dir),
            "--judge",
            judge_spec,
            *as_flags(ppo_settings(config, seed=seed, ptx_data=ptx_data)),
        ).strip()
    )
    ppo_run = TrainingRun.objects.filter(kind=TrainingRun.Kind.PPO, source__project=project).latest(
        "id"
    )
    result.update(ppo_dir=ppo_dir, ppo_run=ppo_run, version=ppo_run.output_model)
    return result


def _policy_figures(step, prompts, after, start_policy, config, round_dir) -> dict:
    """KL on held-out prompts, PPO curves (over-optimization) and shortcut flags, over the
    new policy's held-out answer sets `after`."""
    from training.evaluation import (
        EVAL_TEMPERATURE,
        heldout_kl,
        near_duplicate_share,
        overoptimization,
        pearson,
        plot_overoptimization,
    )
    from training.reward.scoring import load_reward_model

    ppo_run = step["ppo_run"]
    history = ppo_run.metrics_history
    # k3 never goes negative, unlike the k1 sum PPO penalises with (noisy near zero KL).
    kl_key = "kl_k3" if "kl_k3" in ppo_run.metrics else "kl"
    plot = plot_overoptimization(
        history, round_dir / "reward_vs_kl.png", kl_key=kl_key, rm_key="score"
    )
    flag = overoptimization(history, gold_key="gold_score", rm_key="score")
    every_prompt = [p for answers in after for p in prompts]
    every_answer = [a for answers in after for a in answers]
    every_finished = [f for flags in after.finished for f in flags]
    rm_scores = load_reward_model(step["rm_dir"]).score(every_prompt, every_answer)
    return {
        "kl": ppo_run.metrics.get(kl_key),
        "kl_heldout": heldout_kl(
            str(step["ppo_dir"]),
            start_policy,
            every_prompt,
            every_answer,
            finished=every_finished,
            answer_ids=[ids for answers in after.token_ids for ids in answers],
            temperature=EVAL_TEMPERATURE,
        ),
        "rm_score_first": history[0].get("score") if history else None,
        "rm_score_last": history[-1].get("score") if history else None,
        "overoptimization": asdict(flag),
        "rm_length_correlation": pearson(rm_scores, [float(len(a.split())) for a in every_answer])
        if len(every_answer) > 2
        else None,
        "near_duplicate_share": mean([near_duplicate_share(answers) for answers in after]),
        "best_gold_step": ppo_run.metrics.get("best_gold_step"),
        "best_gold_path": ppo_run.metrics.get("best_gold_path"),
        "plot": str(plot) if plot else None,
    }


def _round_line(r: dict) -> str:
    def f(value):
        return "n/a" if value is None else f"{value:.3f}"

    low, high = r.get("gold_ci") or (None, None)
    return (
        f"[loop] round {r['round']}: rm {f(r.get('rm_accuracy_vs_labels'))} "
        f"(labelers {f(r.get('labeler_agreement'))}), gold {f(r.get('gold_before'))} -> "
        f"{f(r.get('gold_after'))} (diff 95% [{f(low)}, {f(high)}]), win "
        f"{f(r.get('win_rate_vs_start'))}, kl {f(r.get('kl_heldout'))}"
    )


def _labeler_round(*, slug, eval_records, start, new, new_name, judge_spec, config, log) -> dict:
    """A fresh labeling round on the held-out prompts: one answer of the start policy and one
    of the new policy per prompt, ranked by new simulated labelers; the head-to-head record
    gives `labeler_win_rate` and the model leaderboard.

    One answer each, not `eval_samples`: a project stores a prompt's answers once each, so
    several would be distinct samples, drawn from further into the tail of a sharper policy
    than of the start policy, a bias against the policy PPO made surer.

    The two policies sample under seeds of their own, at the temperature the judge's win
    rate is measured at (EVAL_TEMPERATURE). Under one seed each token's draw was shared
    (Gumbel-max keyed by seed, prompt and sample), the two policies wrote the same text
    wherever they agreed most, and a project stores a text once: 21 of 48 prompts dropped
    out of the comparison."""
    from annotation.rules.leaderboard import model_leaderboard
    from training.evaluation import EVAL_TEMPERATURE

    eval_slug = f"{slug}-verify"
    project = project_create(
        slug=eval_slug, name=f"Loop {slug}: verification", num_candidates=2, overlap=1
    )
    prompts_import(project=project, records=eval_records, source="held-out")
    from lineage.services import model_path

    start_name = (
        ModelVersion.objects.filter(path__in={start, model_path(start)})
        .order_by("-id")
        .values_list("name", flat=True)
        .first()
        or Path(start).name
    )
    for model, name, seed in (
        (start, start_name, config.seed + 7),
        (new, new_name, config.seed + 8),
    ):
        log(
            _generate(
                eval_slug, model, config, seed=seed, k=1, name=name, temperature=EVAL_TEMPERATURE
            )
        )
    log(_run("build_comparisons", eval_slug).strip())
    log(f"[loop] verification labels: {_simulate(eval_slug, judge_spec, config, 99)}")
    outcomes = head_to_head_outcomes(project)
    new_vs_start = [o for o in outcomes if {o[0], o[1]} == {start_name, new_name}]
    wins = sum(
        1.0
        if (o[2] == "a") == (o[0] == new_name) and o[2] != "tie"
        else 0.5
        if o[2] == "tie"
        else 0.0
        for o in new_vs_start
    )
    rows = model_leaderboard(outcomes)
    return {
        "labeler_win_rate": wins / len(new_vs_start) if new_vs_start else None,
        "labeler_comparisons": len(new_vs_start),
        "leaderboard": [asdict(r) for r in rows],
    }


def head_to_head_outcomes(project) -> list[tuple[str, str, str, int]]:
    """(model_a, model_b, "a"|"b"|"tie", prompt id) per latest annotation and pair of
    candidates of different models in it (the tiers decide; the same tier is a tie); the
    prompt clusters outcomes for the leaderboard's interval."""
    from annotation.models import Candidate

    names = {
        cid: vname or mname or ""
        for cid, vname, mname in Candidate.objects.filter(prompt__project=project).values_list(
            "id", "model_version__name", "model_name"
        )
    }
    outcomes = []
    rows = Annotation.objects.filter(
        comparison__project=project, superseded_by__isnull=True, rejected_at__isnull=True
    ).values_list("ranking", "comparison__prompt_id")
    for ranking, prompt_id in rows:
        tier = {c: t for t, group in enumerate(ranking) for c in group}
        ids = sorted(tier)
        for x in range(len(ids)):
            for y in range(x + 1, len(ids)):
                a, b = ids[x], ids[y]
                if names.get(a) == names.get(b):
                    continue
                result = "tie" if tier[a] == tier[b] else "a" if tier[a] < tier[b] else "b"
                outcomes.append((names[a], names[b], result, prompt_id))
    return outcomes


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
