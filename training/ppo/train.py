"""The PPO loop: setup, models, resume, then per step rollout, rewards, updates, logging.

Each phase is a function of its own module (models, rollout, update, metrics, checkpoint);
this file is the order they run in. No Django: the `train_ppo` command wraps `train_ppo()`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from training.callables import load_callable
from training.distributed import deepspeed_settings, refuse_zero3
from training.modeling import Prompt, config_max_positions, encode_prompt
from training.ppo.best_gold import best_gold_start, save_best_gold
from training.ppo.checkpoint import (
    CONFIG_FILE,
    prompts_sha256,
    resume_or_start,
    run_identity,
    save_checkpoint,
)
from training.ppo.config import PPOConfig, PPOResult
from training.ppo.math import AdaptiveKLController
from training.ppo.metrics import (
    METRICS_FILE,
    SAMPLES_FILE,
    append_jsonl,
    log_scalars,
    rollout_stats,
    tensorboard,
)
from training.ppo.models import (
    PolicyAndValue,
    RewardFn,
    call_scorer,
    load_models,
    update_mode,
)
from training.ppo.ptx import PtxBatches, load_ptx_data, ptx_identity
from training.ppo.rollout import (
    eval_figures,
    eval_samples,
    generation_config,
    held_out_count,
    held_out_split,
    left_pad,
    prompt_indices,
    rollout,
    score_and_shape,
    synced_clock,
)
from training.ppo.update import adamw, linear_schedule, ppo_update
from training.sampling import effective_settings


def _maybe_callable(value: Any) -> Any:
    """A `module:function` string becomes the callable; a path or a callable passes through."""
    if isinstance(value, str) and ":" in value and not os.path.exists(value):
        return load_callable(value)
    return value


def _forget_other_precision(mixed_precision: str) -> None:
    """Let a second run in the same process use another mixed precision.

    accelerate keeps one AcceleratorState per process and refuses a new Accelerator whose
    precision differs from it; the distributed state (PartialState) is kept, only the
    precision part is reset, as transformers' TrainingArguments does.
    """
    from accelerate.state import AcceleratorState

    if (
        AcceleratorState._shared_state
        and str(AcceleratorState().mixed_precision) != mixed_precision
    ):
        AcceleratorState._reset_state(reset_partial_state=False)


def _qualname(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def uses_cpu(config: PPOConfig) -> bool:
    """Whether the run trains on CPU: device "cpu", or "auto" on a machine without CUDA."""
    return config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())


def check_setup(config: PPOConfig, n_prompts: int, num_processes: int) -> None:
    """Refuse settings that cannot train, before any model is loaded or anything written:
    no prompts, evals that hold out every prompt, fp16 without CUDA, a batch that does not
    split over the processes. Raises ValueError naming the setting."""
    if not n_prompts:
        raise ValueError("no prompts to train on")
    if config.mixed_precision == "fp16" and uses_cpu(config):
        raise ValueError("mixed_precision fp16 needs CUDA; on CPU use bf16 (or no)")
    if config.batch_size % (
        num_processes * config.mini_batches * config.gradient_accumulation_steps
    ):
        raise ValueError(
            f"batch_size {config.batch_size} must be divisible by processes ({num_processes}) x "
            f"mini_batches ({config.mini_batches}) x gradient_accumulation_steps "
            f"({config.gradient_accumulation_steps})"
        )
    if config.eval_every:
        held_out_count(config, n_prompts)


def train_ppo(
    policy_path: str | os.PathLike,
    reward: str | os.PathLike | RewardFn,
    prompts: Sequence[Prompt],
    out_dir: str | os.PathLike,
    config: PPOConfig,
    *,
    judge: RewardFn | str | None = None,
    on_metrics: Callable[[dict[str, float]], None] | None = None,
) -> PPOResult:
    """Fine-tune the policy at `policy_path` with PPO against `reward`; save it to `out_dir`.

    `reward` is a reward-model directory or a callable `(prompts, responses) -> list[float]`
    (or its "module:function" name); `judge`, same form, is only logged (gold score); with
    held-out evals, the policy of the eval step with the best held-out gold is also saved to
    `out_dir/best_gold/` (see `best_gold.py`). `on_metrics` gets each step's metrics on the
    main process. Resumes from the latest checkpoint in `out_dir` (config.resume).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    # ----------------------------------------------------------------------- setup
    reward = _maybe_callable(reward)
    judge = _maybe_callable(judge) if judge is not None else None
    prompts = list(prompts)
    out = Path(out_dir)
    # cpu=True also on a GPU-less "auto": only then does accelerate see a torchrun multi-CPU job.
    use_cpu = uses_cpu(config)
    check_setup(config, len(prompts), num_processes=1)  # before accelerate refuses fp16 its way
    # Trainable weights stay in config.dtype (fp32 for a full fine-tune, see PPOConfig); the
    # forward passes run in bf16/fp16 under accelerate's autocast.
    _forget_other_precision(config.mixed_precision)
    accelerator = Accelerator(
        cpu=use_cpu,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
    )
    refuse_zero3(accelerator)
    world = accelerator.num_processes
    check_setup(config, len(prompts), world)
    local_batch = config.batch_size // world
    micro_batch = local_batch // (config.mini_batches * config.gradient_accumulation_steps)
    device = accelerator.device
    set_seed(config.seed, device_specific=True)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)

    # ----------------------------------------------------------------------- models
    models = load_models(
        policy_path, reward, config, device, config.rollout_batch_size or local_batch
    )
    tokenizer, pad_id = models.tokenizer, models.tokenizer.pad_token_id
    model = PolicyAndValue(models.policy, models.value_model)
    trainable = [p for p in model.parameters() if p.requires_grad]  # listed once, not per step
    optimizer = adamw(trainable, config)
    num_steps = config.num_steps
    scheduler = linear_schedule(optimizer, config)
    # The scheduler is not prepared: accelerate would step it once per process per call. Nor
    # registered for checkpointing: accelerate pickles such objects (see checkpoint.py).
    deepspeed_settings(accelerator, micro_batch, config)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped: PolicyAndValue = accelerator.unwrap_model(model)
    if models.ref_policy is not None:
        # DeepSpeed casts what it prepares to its own precision (and turns accelerate's
        # autocast off): the reference must compute in that precision too, or the KL to it
        # starts above zero and the penalty fights rounding. Elsewhere this changes nothing.
        models.ref_policy.to(next(unwrapped.policy.parameters()).dtype)
    kl_ctl = AdaptiveKLController(config.kl_coef, config.target_kl or 1.0, config.horizon)

    def autocast() -> contextlib.AbstractContextManager:
        return accelerator.autocast()

    gen_config = generation_config(config, tokenizer, models.stop_ids)
    sample = functools.partial(
        rollout,
        unwrapped.policy,
        models.ref_policy,
        unwrapped.value_model,
        tokenizer,
        gen_config=gen_config,
        config=config,
        stop_ids=models.stop_ids,
        autocast=autocast,
    )

    # ----------------------------------------------------------------------- resume
    reward_name = reward if isinstance(reward, str | os.PathLike) else _qualname(reward)
    judge_name = None if judge is None else (judge if isinstance(judge, str) else _qualname(judge))
    # Held-out eval prompts (when evals are on): never trained on, sampled for samples.jsonl
    # and the held-out KL. A deterministic split by prompt content, not by position.
    n_eval = held_out_count(config, len(prompts)) if config.eval_every else 0
    train_ids, eval_ids = held_out_split(prompts, n_eval)
    identity = run_identity(policy_path, reward_name, judge_name, prompts)
    identity["prompts"]["held_out_sha256"] = prompts_sha256([prompts[i] for i in eval_ids])
    ptx = None
    if config.ptx_data:
        # PPO-ptx: the LM loss on this data joins every update (ptx.py); a resume needs the same.
        identity["ptx_data"] = ptx_identity(config.ptx_data)
        longest = config_max_positions(unwrapped.policy.config) or 2048
        examples = load_ptx_data(config.ptx_data, tokenizer, longest)
        ptx = PtxBatches(examples, pad_id, config.seed, accelerator.process_index)
    start = resume_or_start(accelerator, out, config, kl_ctl, scheduler, identity)
    start_step, history = start.step, start.history
    if accelerator.is_main_process:
        run_info = {
            **config.to_dict(),
            "policy_path": str(policy_path),
            "value_model_init": models.value_source,
            "reward": reward_name,
            "identity": identity,
            "num_processes": world,
            "sampling": effective_settings(unwrapped.policy, gen_config),
        }
        (out / CONFIG_FILE).write_text(json.dumps(run_info, indent=2, default=str) + "\n")
    writer = tensorboard(out / "tensorboard") if accelerator.is_main_process else None
    encoded = [encode_prompt(tokenizer, p)[-config.max_prompt_length :] for p in prompts]
    if empty := [i for i, ids in enumerate(encoded) if not ids]:
        raise ValueError(f"prompt {empty[0]} renders to no tokens: a prompt needs some text")
    eval_prompts = [prompts[i] for i in eval_ids]

    def write_eval_samples(step: int) -> dict[str, float]:
        """Sample the held-out prompts, log them; return the held-out figures (main process)."""
        if not (accelerator.is_main_process and config.eval_every and eval_prompts):
            return {}
        queries = left_pad([encoded[i] for i in eval_ids], pad_id)
        rows = eval_samples(
            sample,
            queries,
            eval_prompts,
            models.reward,
            judge,
            step=step,
            seed=config.seed,
            device=device,
            kl_estimator=config.kl_estimator,
        )
        append_jsonl(out / SAMPLES_FILE, rows)
        return eval_figures(rows)

    # best_gold (main process): the eval step with the best held-out gold, and the baseline.
    best, baseline_gold = None, None
    if accelerator.is_main_process:
        best, baseline_gold = best_gold_start(out, resumed=start.resumed_from is not None)

    def keep_if_best_gold(figures: dict[str, float], done: int) -> None:
        """Save the policy as best_gold when this eval's gold beats every earlier eval step's."""
        nonlocal best
        gold = figures.get("eval_gold")
        if gold is None or (best is not None and gold <= best.eval_gold):
            return
        record = {
            "step": done,
            "episodes": done * config.batch_size,
            "eval_gold": gold,
            "eval_kl": figures.get("eval_kl"),
            "eval_score": figures.get("eval_score"),
            "baseline_eval_gold": baseline_gold,
        }
        best = save_best_gold(unwrapped.policy, tokenizer, out, record, lora=config.lora)

    if start_step == 0:
        baseline_gold = write_eval_samples(0).get("eval_gold")
    bar = tqdm(
        total=num_steps,
        initial=start_step,
        desc="ppo",
        unit="step",
        disable=not (accelerator.is_main_process and config.progress),
    )
    started = time.perf_counter()
    row: dict[str, float] = history[-1] if history else {}

    for step in range(start_step, num_steps):
        step_started = time.perf_counter()
        # ------------------------------------------------------------------- rollout
        indices = prompt_indices(step, config.batch_size, len(train_ids), config.seed)
        rank = accelerator.process_index
        local = [train_ids[i] for i in indices[rank * local_batch : (rank + 1) * local_batch]]
        batch_prompts = [prompts[i] for i in local]
        timings: dict[str, float] = {}
        phase_started = synced_clock(device)
        batch = sample(left_pad([encoded[i] for i in local], pad_id).to(device), timings=timings)

        # ------------------------------------------------------------------- rewards
        # Scores, minus the per-token KL penalty, then GAE advantages.
        shaped = score_and_shape(batch, batch_prompts, models.reward, kl_ctl.value, config, device)
        scoring_done = synced_clock(device)

        # ------------------------------------------------------------------- PPO epochs
        lr_now = scheduler.get_last_lr()[0]
        if ptx is not None:
            ptx.start_step(step)
        with update_mode(model, config.gradient_checkpointing):
            updates = ppo_update(
                accelerator,
                model,
                trainable,
                optimizer,
                batch,
                shaped,
                config,
                pad_id,
                micro_batch,
                autocast,
                ptx,
            )
        update_done = synced_clock(device)
        scheduler.step()

        # ------------------------------------------------------------------- metrics
        local_stats = rollout_stats(batch, shaped, updates, device)
        if judge is not None:
            gold = call_scorer(judge, batch_prompts, batch.texts, "judge")
            local_stats["gold_score"] = gold.mean().to(device)
        names = list(local_stats)
        reduced = accelerator.reduce(torch.stack([local_stats[k].float() for k in names]), "mean")
        row = dict(zip(names, reduced.tolist(), strict=True))
        kl_coef_used = kl_ctl.value
        if config.target_kl is not None:
            # detail: adaptive KL coefficient (Ziegler et al.), updated after the rollout.
            kl_ctl.update(row["kl"], config.batch_size)
        done = step + 1
        elapsed = time.perf_counter() - started
        row = {
            "step": done,
            "episodes": done * config.batch_size,
            "lr": lr_now,
            "kl_coef": kl_coef_used,
            **row,
            "step_time": time.perf_counter() - step_started,
            # This process's split of the step (rank 0's in the log), device work included.
            "time_generation": timings.get("generation", 0.0),
            "time_scoring": scoring_done - phase_started - timings.get("generation", 0.0),
            "time_update": update_done - scoring_done,
            "episodes_per_s": (done - start_step) * config.batch_size / max(elapsed, 1e-9),
        }

        # ------------------------------------------------------------------- evals, logs, checkpoints
        if config.eval_every and (done % config.eval_every == 0 or done == num_steps):
            figures = write_eval_samples(done)  # eval_kl, eval_score...: held-out prompts
            row.update(figures)
            keep_if_best_gold(figures, done)  # {} on other processes: main process only
        if accelerator.is_main_process:
            history.append(row)
            append_jsonl(out / METRICS_FILE, [row])
            log_scalars(writer, row, done)
            bar.set_postfix(score=f"{row['score']:.3f}", kl=f"{row['kl']:.3f}")
        bar.update(1)
        if config.save_every and done % config.save_every == 0 and done < num_steps:
            save_checkpoint(accelerator, out, done, kl_ctl.value, config, scheduler, identity)
        if on_metrics is not None and accelerator.is_main_process:
            on_metrics(dict(row))
    bar.close()
    if writer is not None:
        writer.close()

    # ----------------------------------------------------------------------- save
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final_policy = accelerator.unwrap_model(model).policy
        if config.lora:
            final_policy = final_policy.merge_and_unload()  # detail: merged weights, plain HF dir
        final_policy.save_pretrained(out)
        tokenizer.save_pretrained(out)
    accelerator.wait_for_everyone()
    return PPOResult(
        output_dir=out,
        steps=num_steps,
        episodes=num_steps * config.batch_size,
        metrics=row,
        history=history,
        resumed_from=start.resumed_from,
        eval_kl=next((r["eval_kl"] for r in reversed(history) if "eval_kl" in r), None),
        num_eval_prompts=len(eval_ids),
        best_gold_step=None if best is None else best.step,
        best_gold=None if best is None else best.eval_gold,
    )
