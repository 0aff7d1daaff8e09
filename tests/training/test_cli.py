"""Command lines generated from the config dataclasses: every field reachable, documented, typed."""

import dataclasses
import subprocess
import sys

import pytest
from django.core.management import CommandError

from training.cli import add_config_arguments, config_from_options, option
from training.management.commands import train_ppo, train_reward_model
from training.ppo.config import PPOConfig
from training.reward.config import RewardConfig

REQUIRED = {
    "train_ppo": ["--policy", "p", "--reward-model", "m:f", "--prompts", "x", "--out", "o"],
    "train_reward_model": ["--export", "1", "--base-model", "b", "--out", "o"],
}
COMMANDS = {"train_ppo": train_ppo.Command, "train_reward_model": train_reward_model.Command}
CONFIGS = {"train_ppo": PPOConfig, "train_reward_model": RewardConfig}

# One non-default value per field: (what the user types, what the config then holds).
PPO_CASES = {
    "total_episodes": (["--total-episodes", "2048"], 2048),
    "batch_size": (["--batch-size", "32"], 32),
    "mini_batches": (["--mini-batches", "2"], 2),
    "ppo_epochs": (["--ppo-epochs", "2"], 2),
    "gradient_accumulation_steps": (["--gradient-accumulation-steps", "2"], 2),
    "lr": (["--lr", "1e-5"], 1e-5),
    "adam_eps": (["--adam-eps", "1e-6"], 1e-6),
    "weight_decay": (["--weight-decay", "0.01"], 0.01),
    "anneal_lr": (["--no-anneal-lr"], False),
    "response_length": (["--response-length", "20"], 20),
    "max_prompt_length": (["--max-prompt-length", "256"], 256),
    "temperature": (["--temperature", "1.0"], 1.0),
    "kl_coef": (["--kl-coef", "0.1"], 0.1),
    "kl_estimator": (["--kl-estimator", "k3"], "k3"),
    "target_kl": (["--target-kl", "6"], 6.0),
    "horizon": (["--horizon", "5000"], 5000),
    "gamma": (["--gamma", "0.99"], 0.99),
    "lam": (["--lam", "0.9"], 0.9),
    "cliprange": (["--cliprange", "0.1"], 0.1),
    "cliprange_value": (["--cliprange-value", "0.3"], 0.3),
    "vf_coef": (["--vf-coef", "0.5"], 0.5),
    "max_grad_norm": (["--max-grad-norm", "0.5"], 0.5),
    "missing_eos_penalty": (["--missing-eos-penalty", "none"], None),
    "whiten_rewards": (["--whiten-rewards"], True),
    "ptx_data": (["--ptx-data", "pretraining.jsonl"], "pretraining.jsonl"),
    "ptx_coef": (["--ptx-coef", "0.5"], 0.5),
    "lora": (["--lora"], True),
    "lora_r": (["--lora-r", "8"], 8),
    "lora_alpha": (["--lora-alpha", "16"], 16),
    "lora_target_modules": (["--lora-target-modules", "q_proj, v_proj"], ("q_proj", "v_proj")),
    "gradient_checkpointing": (["--gradient-checkpointing"], True),
    "rollout_batch_size": (["--rollout-batch-size", "8"], 8),
    "seed": (["--seed", "3"], 3),
    "eval_every": (["--eval-every", "0"], 0),
    "num_eval_prompts": (["--num-eval-prompts", "4"], 4),
    "eval_fraction": (["--eval-fraction", "0.1"], 0.1),
    "save_every": (["--save-every", "10"], 10),
    "keep_checkpoints": (["--keep-checkpoints", "1"], 1),
    "resume": (["--no-resume"], False),
    "device": (["--device", "cpu"], "cpu"),
    "dtype": (["--dtype", "bfloat16"], "bfloat16"),
    "mixed_precision": (["--mixed-precision", "bf16"], "bf16"),
    "progress": (["--no-progress"], False),
}
REWARD_CASES = {
    "loss": (["--loss", "kwise"], "kwise"),
    "lora": (["--lora"], True),
    "lora_r": (["--lora-r", "8"], 8),
    "lora_alpha": (["--lora-alpha", "16"], 16),
    "lora_dropout": (["--lora-dropout", "0.1"], 0.1),
    "lora_target_modules": (["--lora-target-modules", "c_attn"], ("c_attn",)),
    "epochs": (["--epochs", "2.5"], 2.5),
    "max_steps": (["--max-steps", "100"], 100),
    "lr": (["--lr", "1e-4"], 1e-4),
    "lr_scheduler": (["--lr-scheduler", "cosine"], "cosine"),
    "warmup_steps": (["--warmup-steps", "0.1"], 0.1),
    "weight_decay": (["--weight-decay", "0.01"], 0.01),
    "batch_size": (["--batch-size", "4"], 4),
    "eval_batch_size": (["--eval-batch-size", "16"], 16),
    "gradient_accumulation": (["--gradient-accumulation", "2"], 2),
    "max_length": (["--max-length", "256"], 256),
    "margin_scale": (["--margin-scale", "0.5"], 0.5),
    "seed": (["--seed", "7"], 7),
    "eval_fraction": (["--eval-fraction", "0.1"], 0.1),
    "eval_each_epoch": (["--no-eval-each-epoch"], False),
    "device": (["--device", "cuda:1"], "cuda:1"),
    "mixed_precision": (["--mixed-precision", "no"], "no"),
    "gradient_checkpointing": (["--gradient-checkpointing"], True),
    "early_stopping_patience": (["--early-stopping-patience", "3"], 3),
    "validation_fraction": (["--validation-fraction", "0.2"], 0.2),
    "logging_steps": (["--logging-steps", "5"], 5),
    "save_steps": (["--save-steps", "50"], 50),
    "save_total_limit": (["--save-total-limit", "none"], None),
    "resume": (["--no-resume"], False),
    "dataloader_workers": (["--dataloader-workers", "2"], 2),
}
CASES = {"train_ppo": PPO_CASES, "train_reward_model": REWARD_CASES}


def parser_of(command: str):
    return COMMANDS[command]().create_parser("manage.py", command)


def parse(command: str, argv: list[str]) -> dict:
    return vars(parser_of(command).parse_args([*REQUIRED[command], *argv]))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_config_field_is_an_option_with_its_doc_in_help(command):
    parser = parser_of(command)
    dests = {action.dest for action in parser._actions}
    fields = dataclasses.fields(CONFIGS[command])
    assert {f.name for f in fields} <= dests
    # argparse re-wraps help text (and may break after a hyphen): compare without whitespace.
    help_text = "".join(parser.format_help().split())
    for f in fields:
        flag = "--" + f.name.replace("_", "-")
        assert flag in help_text, flag
        assert "".join(f.metadata["help"].split()) in help_text, f.name


@pytest.mark.parametrize("command", COMMANDS)
def test_each_parsed_flag_reaches_the_config(command):
    config_cls, cases = CONFIGS[command], CASES[command]
    assert set(cases) == {f.name for f in dataclasses.fields(config_cls)}  # a new field: add it
    argv = [token for tokens, _ in cases.values() for token in tokens]
    config = config_cls.from_options(parse(command, argv))
    for name, (_, expected) in cases.items():
        assert getattr(config, name) == expected, name
        assert expected != getattr(config_cls(), name), f"{name}: the case must change the default"


@pytest.mark.parametrize("command", COMMANDS)
def test_options_not_given_keep_the_dataclass_defaults(command):
    assert CONFIGS[command].from_options(parse(command, [])) == CONFIGS[command]()


def test_spec_flags_keep_their_names():
    ppo = parse("train_ppo", ["--judge", "j:f", "--lora", "--kl-coef", "0.2", "--seed", "1"])
    assert (ppo["judge"], ppo["lora"], ppo["kl_coef"], ppo["seed"]) == ("j:f", True, 0.2, 1)
    reward = parse("train_reward_model", ["--loss", "pairwise", "--no-resume", "--epochs", "2"])
    assert (reward["loss"], reward["resume"], reward["epochs"]) == ("pairwise", False, 2.0)
    with pytest.raises(CommandError, match="invalid choice"):  # from the Literal annotation
        parse("train_reward_model", ["--loss", "listwise"])


def test_helper_types_and_percent_signs():
    import argparse
    from typing import Literal

    @dataclasses.dataclass(frozen=True)
    class Toy:
        share: float = option(0.5, "share of rows, in % of all")
        mode: Literal["a", "b"] = option("a", "which mode")
        limit: int | None = option(3, "cap")
        names: tuple[str, ...] = option(("x",), "names")

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Toy)
    assert "in % of all" in parser.format_help()
    options = vars(parser.parse_args(["--limit", "none", "--names", "p,q", "--mode", "b"]))
    assert config_from_options(Toy, options) == Toy(limit=None, names=("p", "q"), mode="b")
    with pytest.raises(SystemExit):
        parser.parse_args(["--limit", "many"])

    @dataclasses.dataclass
    class Unsupported:
        table: dict = option(None, "no flag for this")

    with pytest.raises(TypeError, match="no command-line form"):
        add_config_arguments(argparse.ArgumentParser(), Unsupported)


def test_configs_and_export_reading_import_without_torch():
    """The commands' --help must work on an install without the `train` extra."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'trl', 'transformers', 'accelerate', 'peft'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import training.cli, training.ppo.config, training.reward.config, training.reward.data\n"
        "from training.ppo import PPOConfig\n"
        "from training.reward import RewardConfig, RewardDataError\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("module", "cls", "name", "full", "lora"),
    [
        ("training.sft", "SFTTrainConfig", "SFT config", 2e-5, 2e-4),
        ("training.dpo", "DPOTrainConfig", "DPO config", 5e-7, 5e-6),
        ("training.reward.config", "RewardConfig", "RewardConfig", 1e-5, 1e-4),
    ],
)
def test_the_trainer_configs_share_learning_rate_options_and_refusals(
    module, cls, name, full, lora
):
    import importlib

    config_cls = getattr(importlib.import_module(module), cls)
    assert config_cls().learning_rate == full and config_cls(lora=True).learning_rate == lora
    given = config_cls.from_options({"learning_rate": 3e-4, "num_train_epochs": 2, "out": "x"})
    assert (given.lr, given.epochs, given.learning_rate) == (3e-4, 2.0, 3e-4)
    assert given.to_dict()["learning_rate"] == 3e-4 and given.to_dict()["lr"] == 3e-4
    with pytest.raises(
        ValueError, match=rf"^invalid {name}: epochs must be > 0; lora_r must be >= 1$"
    ):
        config_cls(epochs=0, lora_r=0)
