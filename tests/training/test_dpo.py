"""train_dpo: DPOTrainer on a pairs export, loss goes down, lineage like PPO, LoRA, bad input."""

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotation.datafiles.digest import sha256_file
from lineage.models import ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db

WORDS = ["red", "blue", "green", "cat", "dog", "sun"]


def write_pairs(folder: Path, rows=None) -> Path:
    """An easy export: the answer repeats the asked word, the rejected one is always 'no'."""
    folder.mkdir(parents=True, exist_ok=True)
    if rows is None:
        rows = [
            {
                "prompt": [{"role": "user", "content": f"say {w}"}],
                "chosen": [{"role": "assistant", "content": f"{w} {w}"}],
                "rejected": [{"role": "assistant", "content": "no"}],
                "margin": 1,
                "weight": 1.0,
                "split": "test" if i >= 15 else "train",
            }
            for i, w in enumerate(WORDS * 3)
        ]
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = {
        "schema_version": 1,
        "files": {"pairs": {"path": "pairs.jsonl", "sha256": sha256_file(folder / "pairs.jsonl")}},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def chat_lm(tmp_path_factory) -> Path:
    from training.tiny import build_tiny_causal_lm

    texts = [f"say {w} {w} {w} no" for w in WORDS] * 5
    return build_tiny_causal_lm(
        tmp_path_factory.mktemp("tiny") / "chat", texts, chat_template=True, vocab_size=200
    )


def dpo(export, policy, out, *extra, **kwargs) -> None:
    call_command(
        "train_dpo",
        "--export",
        str(export),
        "--policy",
        str(policy),
        "--out",
        str(out),
        *extra,
        **kwargs,
    )


EASY = ("--max-steps", "20", "--lr", "1e-3", "--batch-size", "4", "--logging-steps", "5")


@pytest.mark.ml
def test_train_dpo_learns_an_easy_set_and_registers_like_ppo(tmp_path, project, chat_lm):
    from annotation.models import Export

    folder = write_pairs(tmp_path / "export")
    export = Export.objects.create(
        project=project, path=str(folder.resolve()), sha256=sha256_file(folder / "pairs.jsonl")
    )
    out = StringIO()
    dpo(export.pk, chat_lm, tmp_path / "policy", *EASY, "--beta", "0.2", stdout=out)
    assert "held-out preference accuracy" in out.getvalue()
    run = TrainingRun.objects.get(kind="dpo")
    assert run.status == "succeeded"
    assert run.metrics["last_loss"] < run.metrics["first_loss"] < 0.75  # starts near log 2
    assert run.metrics["eval_accuracy"] == 1.0 and run.metrics["eval_margin"] > 0
    assert run.metrics["train_pairs"] == 15 and run.metrics["eval_pairs"] == 3
    assert run.config["beta"] == 0.2 and run.config["loss_type"] == "sigmoid"
    assert run.source.export == export and run.source.project == project
    version = ModelVersion.objects.get(produced_by=run)
    assert version.kind == "policy" and version.parent.path == str(chat_lm)
    assert version.metadata["method"] == "dpo"
    recorded = json.loads((tmp_path / "policy" / "training_config.json").read_text())
    assert recorded["reference"] == "frozen copy" and "not used" in recorded["weights_and_margins"]
    assert (tmp_path / "policy" / "model.safetensors").is_file()


@pytest.mark.ml
def test_dpo_lora_uses_the_disabled_adapter_as_reference(tmp_path, chat_lm):
    from peft import PeftModel

    from training.dpo import DPOTrainConfig, build_dpo_trainer
    from training.modeling import load_causal_lm
    from training.reward.data import load_preferences

    folder = write_pairs(tmp_path / "export")
    trainer, *_ = build_dpo_trainer(
        load_preferences(folder), str(chat_lm), tmp_path / "x", DPOTrainConfig(lora=True)
    )
    assert trainer.ref_model is None and isinstance(trainer.model, PeftModel)

    dpo(
        folder,
        chat_lm,
        tmp_path / "lora",
        *EASY,
        "--lora",
        "--lr",
        "5e-3",
        "--loss-type",
        "ipo",
        "--max-length",
        "100000",
    )
    run = TrainingRun.objects.get(kind="dpo")
    assert run.status == "succeeded" and run.metrics["last_loss"] < run.metrics["first_loss"]
    recorded = json.loads((tmp_path / "lora" / "training_config.json").read_text())
    assert recorded["config"]["max_length"] == 256 and recorded["reference"].startswith("policy")
    assert (tmp_path / "lora" / "adapter" / "adapter_config.json").is_file()
    model, _ = load_causal_lm(tmp_path / "lora", device="cpu")  # merged: a plain model
    assert not hasattr(model, "peft_config")


@pytest.mark.parametrize(
    "line, message",
    [
        ({"prompt": "p", "chosen": "a"}, r"pairs\.jsonl:2: missing column"),
        ({"prompt": 3, "chosen": "a", "rejected": "b"}, r"pairs\.jsonl:2: 'prompt' must be"),
        (
            {"prompt": "p", "chosen": "a", "rejected": "b", "split": "dev"},
            r"pairs\.jsonl:2: 'split'",
        ),
    ],
)
def test_bad_pairs_name_file_and_line_and_write_nothing(tmp_path, line, message):
    good = {"prompt": "p", "chosen": "a", "rejected": "b", "split": "train"}
    folder = write_pairs(tmp_path / "export", [good, line])
    with pytest.raises(CommandError, match=message) as info:
        dpo(folder, tmp_path / "no-model", tmp_path / "o")
    assert "\n" not in str(info.value)
    assert not TrainingRun.objects.exists() and not ModelVersion.objects.exists()
    assert not (tmp_path / "o").exists()


def test_bad_options_policy_and_modified_export_write_nothing(tmp_path, chat_lm):
    folder = write_pairs(tmp_path / "export")
    with pytest.raises(CommandError, match="does not exist"):
        dpo(folder, tmp_path / "no-model", tmp_path / "o")
    with pytest.raises(CommandError, match="beta must be > 0"):
        dpo(folder, chat_lm, tmp_path / "o", "--beta", "0")
    with pytest.raises(CommandError, match="No export with id 999"):
        dpo("999", chat_lm, tmp_path / "o")
    ModelVersion.objects.create(name="taken", path="/models/elsewhere")
    with pytest.raises(CommandError, match="--name 'taken' is taken"):
        dpo(folder, chat_lm, tmp_path / "o", "--name", "taken")
    ModelVersion.objects.filter(name="taken").delete()
    with (folder / "pairs.jsonl").open("a") as f:
        f.write(json.dumps({"prompt": "p", "chosen": "planted", "rejected": "x"}) + "\n")
    with pytest.raises(CommandError, match="modified after export"):
        dpo(folder, chat_lm, tmp_path / "o")
    assert not TrainingRun.objects.exists() and not ModelVersion.objects.exists()
    assert not (tmp_path / "o").exists()


def test_loss_type_choices_come_from_trl():
    from training.dpo import LOSS_TYPES

    with pytest.raises(CommandError, match="invalid choice"):
        call_command(
            "train_dpo", "--export", "1", "--policy", "p", "--out", "o", "--loss-type", "nope"
        )
    assert {"sigmoid", "ipo", "hinge", "robust"} <= set(LOSS_TYPES)


@pytest.mark.ml
def test_a_second_run_resumes_its_checkpoint_and_other_data_is_refused_first(tmp_path, chat_lm):
    folder = write_pairs(tmp_path / "export")
    out = tmp_path / "o"
    args = ("--max-steps", "2", "--batch-size", "4", "--save-steps", "2", "--logging-steps", "1")
    dpo(folder, chat_lm, out, *args)
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    (out / "model.safetensors").unlink()  # as if killed before the final save
    dpo(folder, chat_lm, out, *args)  # its own checkpoint: resumed, not refused
    assert TrainingRun.objects.filter(status="succeeded").count() == 2
    versions = ModelVersion.objects.count()
    with pytest.raises(CommandError, match=r"different run \(--loss-type changed\)"):
        dpo(folder, chat_lm, out, *args, "--loss-type", "ipo")
    assert TrainingRun.objects.count() == 2 and ModelVersion.objects.count() == versions


@pytest.mark.ml
def test_dpo_trains_on_the_tokens_generation_and_the_reward_model_see(tmp_path):
    # The tiny template's generation prompt ends in a space ("<|assistant|> "): trl's own
    # tokenization of prompt + answer as one string merged that space into the answer's
    # first token and cut the prompt's last token off, so the policy learnt tokens it never
    # samples after its real prompt.
    from training.dpo import DPOTrainConfig, build_dpo_trainer
    from training.modeling import encode_prompt, load_causal_lm
    from training.reward.data import load_preferences
    from training.reward.scoring import render_reward_input
    from training.tiny import build_tiny_causal_lm

    texts = [f"say {w} {w} {w} no" for w in WORDS] * 5
    # A vocabulary with merges (chat_lm's 200 tokens hold bytes only): " red" is one token.
    merged_lm = build_tiny_causal_lm(tmp_path / "lm", texts, chat_template=True, vocab_size=400)
    folder = write_pairs(tmp_path / "export")
    prefs = load_preferences(folder)
    trainer, tokenizer, n_train, _ = build_dpo_trainer(
        prefs, str(merged_lm), tmp_path / "x", DPOTrainConfig()
    )
    _, tok = load_causal_lm(str(merged_lm), device="cpu")
    assert (
        tok.convert_ids_to_tokens(encode_prompt(tok, [{"role": "user", "content": "a"}]))[-1] == "Ġ"
        and "Ġred" in tok.get_vocab()
    )
    pair = prefs.split_pairs("train")[0]
    row = trainer.train_dataset[0]
    assert n_train == len(trainer.train_dataset) == 15
    assert row["prompt_ids"] == encode_prompt(tok, pair.prompt)
    # The same ids the reward model scores (prompt, stripped answer, EOS).
    rendered, _ = render_reward_input(tok, pair.prompt, pair.chosen, max_length=256)
    assert row["prompt_ids"] + row["chosen_ids"] == rendered
    assert row["rejected_ids"][-1] == tok.eos_token_id
    assert row["chosen_ids"].count(tok.eos_token_id) == 1


@pytest.mark.ml
@pytest.mark.parametrize("adds_bos", [False, True])
def test_dpo_prompts_hold_one_bos(adds_bos):
    # A template that writes BOS and a tokenizer that adds BOS too (Llama-3, Gemma): one BOS,
    # as encode_prompt gives generation.
    from tokenizers import processors

    from training.dpo import preference_rows
    from training.reward.data import PreferencePair
    from training.tiny import build_tokenizer

    tokenizer = build_tokenizer(["say hi ok hello there"] * 5, vocab_size=120, chat_template=True)
    tokenizer.chat_template = "{{ bos_token }}" + tokenizer.chat_template
    if adds_bos:
        tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
            single="<bos> $A", special_tokens=[("<bos>", tokenizer.bos_token_id)]
        )
    chat = [{"role": "system", "content": "ok"}, {"role": "user", "content": "hello"}]
    pairs = [PreferencePair(prompt=p, chosen=" hi ", rejected="ok") for p in ("say hi", chat)]
    rows, dropped = preference_rows(pairs, tokenizer, max_length=64)
    assert dropped == 0
    for row in rows:
        assert (row["prompt_ids"] + row["chosen_ids"]).count(tokenizer.bos_token_id) == 1
        assert tokenizer.decode(row["chosen_ids"]) == "hi<eos>"


def test_pairs_whose_prompt_fills_max_length_are_left_out_and_counted():
    from training.dpo import preference_rows
    from training.reward.data import PreferencePair
    from training.tiny import build_tokenizer

    tokenizer = build_tokenizer(["a b c d e f g h"] * 5, vocab_size=60)
    pairs = [
        PreferencePair(prompt="a b", chosen="c", rejected="d"),
        PreferencePair(prompt="a b c d e f g h a b c d", chosen="c", rejected="d"),
    ]
    rows, dropped = preference_rows(pairs, tokenizer, max_length=8)
    assert dropped == 1 and len(rows) == 1
    assert preference_rows(pairs, tokenizer, max_length=None)[1] == 0
