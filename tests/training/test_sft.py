"""train_sft: SFTTrainer on demonstrations, loss on assistant tokens only, lineage, bad input."""

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from lineage.models import ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db

WORDS = ["red", "blue", "green", "cat", "dog", "sun"]


def conversations() -> list[list[dict]]:
    convs = [
        [{"role": "user", "content": f"say {w}"}, {"role": "assistant", "content": f"{w} {w}"}]
        for w in WORDS * 3
    ]
    convs.append(
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye"},
            {"role": "assistant", "content": "goodbye"},
        ]
    )
    return convs


def write_sft(folder: Path, rows=None, manifest: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = rows if rows is not None else [{"messages": c} for c in conversations()]
    (folder / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "manifest.json").write_text(
        json.dumps(manifest or {"format": "sft", "rows": len(rows)})
    )
    return folder


@pytest.fixture(scope="module")
def chat_lm(tmp_path_factory) -> Path:
    from training.tiny import build_tiny_causal_lm

    texts = [m["content"] for c in conversations() for m in c] * 3
    return build_tiny_causal_lm(
        tmp_path_factory.mktemp("tiny") / "chat", texts, chat_template=True, vocab_size=300
    )


def sft(data, base, out, *extra, **kwargs) -> None:
    call_command(
        "train_sft",
        "--data",
        str(data),
        "--base-model",
        str(base),
        "--out",
        str(out),
        *extra,
        **kwargs,
    )


def labelled_text(tokenizer, row) -> tuple[str, str]:
    """(text of tokens with a label, text of tokens without) of one tokenized row."""
    ids, labels = row["input_ids"], row["labels"]
    kept = tokenizer.decode([i for i, lab in zip(ids, labels) if lab != -100])
    masked = tokenizer.decode([i for i, lab in zip(ids, labels) if lab == -100])
    return kept, masked


@pytest.mark.ml
def test_only_assistant_tokens_carry_labels(tmp_path, chat_lm):
    from training.sft import SFTTrainConfig, build_sft_trainer, load_demonstrations

    demos = load_demonstrations(write_sft(tmp_path / "data"))
    trainer, tokenizer, mode = build_sft_trainer(
        demos, str(chat_lm), tmp_path / "o", SFTTrainConfig()
    )
    assert mode == "assistant_turns"
    assert len(trainer.train_dataset) == len(demos.conversations) + 1  # two answers in the last
    first, second = (trainer.train_dataset[len(trainer.train_dataset) - n] for n in (2, 1))
    kept, masked = labelled_text(tokenizer, first)
    assert kept == "hello<eos>"  # learns to stop
    kept, masked = labelled_text(tokenizer, second)
    assert kept == "goodbye<eos>"
    for text in ("be brief", "hi", "hello", "bye", "<|user|>", "<|assistant|>", "<|system|>"):
        assert text in masked
    assert all(lab in (-100, i) for i, lab in zip(second["input_ids"], second["labels"]))


@pytest.mark.ml
@pytest.mark.parametrize("template", ["markers", "plain", None])
def test_each_turn_is_learnt_after_the_prompt_generation_renders(tmp_path, template):
    """With generation markers, without them, or with no template at all: the labelled turn
    follows exactly the ids generation continues (encode_prompt), and the answer's ids are
    the reward model's. The tiny template's generation prompt ends in a space: rendered
    whole, the space would merge into the answer's first token."""
    import shutil

    from training.modeling import encode_prompt, load_causal_lm
    from training.reward.scoring import render_reward_input
    from training.sft import SFTTrainConfig, build_sft_trainer, load_demonstrations
    from training.tiny import build_tiny_causal_lm

    texts = [m["content"] for c in conversations() for m in c] * 3
    # Enough vocabulary for merges (" red" one token), unlike chat_lm's.
    lm = build_tiny_causal_lm(tmp_path / "lm", texts, chat_template=True, vocab_size=400)
    base = tmp_path / f"base-{template}"
    shutil.copytree(lm, base)
    if template != "markers":
        config = json.loads((base / "tokenizer_config.json").read_text())
        (base / "chat_template.jinja").unlink(missing_ok=True)
        config.pop("chat_template", None)
        if template == "plain":
            config["chat_template"] = (
                "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <eos> {% endfor %}"
                "{% if add_generation_prompt %}<|assistant|> {% endif %}"
            )
        (base / "tokenizer_config.json").write_text(json.dumps(config))
    demos = load_demonstrations(write_sft(tmp_path / "data"))
    trainer, _, _ = build_sft_trainer(demos, str(base), tmp_path / "o", SFTTrainConfig())
    _, tok = load_causal_lm(str(base), device="cpu")
    assert "Ġred" in tok.get_vocab()
    single_turn = demos.conversations[:-1]  # the last has two answers, so two rows
    for conversation, row in zip(single_turn, trainer.train_dataset, strict=False):
        prompt, answer = conversation[:-1], conversation[-1]["content"]
        prompt_ids = encode_prompt(tok, prompt)
        assert row["input_ids"][: len(prompt_ids)] == prompt_ids
        assert set(row["labels"][: len(prompt_ids)]) == {-100}
        rendered, _ = render_reward_input(tok, prompt, answer, max_length=256)
        assert row["input_ids"] == rendered == prompt_ids + row["labels"][len(prompt_ids) :]


def test_turns_whose_prompt_fills_max_length_are_left_out_and_long_answers_cut():
    from training.sft import build_rows
    from training.tiny import build_tokenizer

    tokenizer = build_tokenizer(["a b c d e f g h"] * 5, vocab_size=60)
    short = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b c d e f g"}]
    long = [{"role": "user", "content": "a b c d e f g h"}, {"role": "assistant", "content": "b"}]
    rows, dropped = build_rows([short, long], tokenizer, max_length=24)
    assert dropped == 1 and len(rows) == 1
    assert len(rows[0]["input_ids"]) == len(rows[0]["labels"]) == 24  # the answer cut
    full, _ = build_rows([short], tokenizer, max_length=None)
    assert full[0]["labels"][-1] == tokenizer.eos_token_id


@pytest.mark.ml
def test_train_sft_registers_a_policy_with_lineage_to_the_export(tmp_path, project, chat_lm):
    from annotation.models import Export
    from training.modeling import load_causal_lm

    folder = write_sft(tmp_path / "export")
    export = Export.objects.create(project=project, path=str(folder.resolve()), sha256="0" * 64)
    out = StringIO()
    sft(
        export.pk,
        chat_lm,
        tmp_path / "policy",
        "--max-steps",
        "30",
        "--lr",
        "1e-2",
        "--batch-size",
        "4",
        "--logging-steps",
        "5",
        stdout=out,
    )
    assert "saved" in out.getvalue()
    run = TrainingRun.objects.get(kind="sft")
    assert run.status == "succeeded"
    assert run.metrics["masking"] == "assistant_turns"
    assert run.metrics["last_loss"] < run.metrics["first_loss"]
    assert run.source.export == export and run.source.project == project
    version = ModelVersion.objects.get(produced_by=run)
    assert version.kind == "policy" and version.parent.path == str(chat_lm)
    assert list(run.input_models.all()) == [version.parent]
    assert (tmp_path / "policy" / "training_config.json").is_file()
    model, tokenizer = load_causal_lm(tmp_path / "policy", device="cpu")
    assert model.config.vocab_size == len(tokenizer)


@pytest.mark.ml
def test_train_sft_lora_saves_a_merged_model_and_the_adapter(tmp_path, chat_lm):
    from training.modeling import load_causal_lm

    sft(
        write_sft(tmp_path / "d") / "sft.jsonl",
        chat_lm,
        tmp_path / "lora",
        "--lora",
        "--max-steps",
        "4",
        "--max-length",
        "100000",  # capped at the 256 positions of the model
        "--batch-size",
        "4",
    )
    run = TrainingRun.objects.get(kind="sft")
    assert run.status == "succeeded" and run.config["lora"] is True
    recorded = json.loads((tmp_path / "lora" / "training_config.json").read_text())
    assert recorded["config"]["max_length"] == 256
    assert (tmp_path / "lora" / "adapter" / "adapter_config.json").is_file()
    assert not (tmp_path / "lora" / "adapter_config.json").exists()  # a plain model folder
    model, _ = load_causal_lm(tmp_path / "lora", device="cpu")
    assert not hasattr(model, "peft_config")


@pytest.mark.parametrize(
    "rows, message",
    [
        (
            [
                {
                    "messages": [
                        {"role": "user", "content": "q"},
                        {"role": "assistant", "content": "a"},
                    ]
                },
                {"messages": [{"role": "user", "content": "q"}]},
            ],
            r"sft\.jsonl:2: no assistant message",
        ),
        (
            [{"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}],
            r"sft\.jsonl:1: messages\[1\]\.role must be one of",
        ),
        ([{"prompt": "q"}], r"sft\.jsonl:1: 'messages' must be a non-empty list"),
        (
            [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 3}]}],
            r"sft\.jsonl:1: messages\[1\]\.content must be a string",
        ),
        ([], r"sft\.jsonl: the file is empty"),
    ],
)
def test_bad_demonstrations_name_file_and_line_and_write_nothing(tmp_path, rows, message):
    folder = write_sft(tmp_path / "d", rows)
    with pytest.raises(CommandError, match=message) as info:
        sft(folder, tmp_path / "no-model", tmp_path / "o")
    assert "\n" not in str(info.value)
    assert not TrainingRun.objects.exists() and not ModelVersion.objects.exists()
    assert not (tmp_path / "o").exists()


def test_bad_json_line_and_wrong_export_kind(tmp_path, project):
    from annotation.models import Export

    folder = write_sft(tmp_path / "d")
    with (folder / "sft.jsonl").open("a") as f:
        f.write("{not json\n")
    with pytest.raises(CommandError, match=r"sft\.jsonl:20"):
        sft(folder / "sft.jsonl", tmp_path / "m", tmp_path / "o")
    pairs = tmp_path / "pairs-export"
    write_sft(pairs, manifest={"format": "pairs"})
    with pytest.raises(CommandError, match="not a demonstrations export"):
        sft(pairs, tmp_path / "m", tmp_path / "o")
    empty = tmp_path / "empty"
    empty.mkdir()
    export = Export.objects.create(project=project, path=str(empty), sha256="0" * 64)
    with pytest.raises(CommandError, match="no sft.jsonl in this folder"):
        sft(export.pk, tmp_path / "m", tmp_path / "o")
    with pytest.raises(CommandError, match="No export with id 999"):
        sft("999", tmp_path / "m", tmp_path / "o")
    assert not TrainingRun.objects.exists() and not (tmp_path / "o").exists()


def test_bad_base_model_writes_nothing(tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        sft(write_sft(tmp_path / "d"), tmp_path / "no-model", tmp_path / "o")
    assert not TrainingRun.objects.exists() and not ModelVersion.objects.exists()
    assert not (tmp_path / "o").exists()


def test_a_taken_name_is_refused_before_training(tmp_path):
    ModelVersion.objects.create(name="taken", path="/models/elsewhere")
    with pytest.raises(CommandError, match="--name 'taken' is taken"):
        sft(write_sft(tmp_path / "d"), tmp_path / "no-model", tmp_path / "o", "--name", "taken")
    assert not TrainingRun.objects.exists() and ModelVersion.objects.count() == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.ml
def test_a_second_run_resumes_its_checkpoint_and_other_data_is_refused_first(tmp_path, chat_lm):
    folder = write_sft(tmp_path / "d")
    out = tmp_path / "o"
    args = ("--max-steps", "4", "--batch-size", "2", "--save-steps", "2", "--logging-steps", "1")
    sft(folder, chat_lm, out, *args)
    assert (out / "checkpoints" / "checkpoint-4").is_dir()
    # The same run again, killed before its final save: the checkpoint is its own, so the
    # command lets it resume.
    (out / "model.safetensors").unlink()
    sft(folder, chat_lm, out, *args)
    assert TrainingRun.objects.filter(status="succeeded").count() == 2
    versions = ModelVersion.objects.count()
    other = write_sft(tmp_path / "other", [{"messages": conversations()[0]}])
    with pytest.raises(CommandError, match=r"different run \(the data of --data changed\)"):
        sft(other, chat_lm, out, *args)
    assert TrainingRun.objects.count() == 2 and ModelVersion.objects.count() == versions
