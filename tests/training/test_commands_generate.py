"""generate_candidates: stores K candidates per prompt, records the run, resumes without duplicates."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Candidate, Prompt
from lineage.models import ModelVersion, TrainingRun

pytestmark = [pytest.mark.django_db, pytest.mark.ml]


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    import torch

    from training.tiny import build_tiny_causal_lm

    torch.set_num_threads(1)
    texts = [f"question {i} answer {i * 7} thanks" for i in range(200)]
    return str(build_tiny_causal_lm(tmp_path_factory.mktemp("policy"), texts, vocab_size=300))


def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def prompts_project(make_project, tmp_path):
    project = make_project("gen", num_candidates=3)
    path = tmp_path / "p.jsonl"
    path.write_text(
        "\n".join(json.dumps({"external_id": str(i), "text": f"question {i}"}) for i in range(5))
    )
    run("import_prompts", "gen", str(path))
    return project


def test_generates_k_distinct_candidates_and_records_the_run(prompts_project, tiny_policy):
    out = run(
        "generate_candidates",
        "gen",
        "--model",
        tiny_policy,
        "--max-new-tokens",
        "8",
        "--no-progress",
        "--name",
        "tiny-v0",
    )
    assert "stored 15 candidates for 5 prompts from tiny-v0" in out
    for prompt in Prompt.objects.filter(project=prompts_project):
        texts = list(prompt.candidates.values_list("text", flat=True))
        assert len(texts) == 3 and len(set(texts)) == 3
    candidate = Candidate.objects.first()
    assert (
        candidate.model_version.name == "tiny-v0"
        and candidate.generation_params["max_new_tokens"] == 8
    )
    # Every setting the sampling used is stored with the candidate, not only the options given.
    used = candidate.generation_params["generation"]
    assert used["do_sample"] is True and used["temperature"] == 1.0 and used["top_k"] == 0
    assert used["repetition_penalty"] == 1.0 and used["min_new_tokens"] == 0
    assert used["max_new_tokens"] == 8 and used["eos_token_id"]
    version = ModelVersion.objects.get(name="tiny-v0")
    assert version.path == tiny_policy and version.kind == "policy"
    run_row = TrainingRun.objects.get(kind="generate")
    assert run_row.status == "succeeded" and run_row.metrics["candidates"] == 15
    assert list(run_row.input_models.all()) == [version]
    assert run_row.source.project == prompts_project and run_row.source.export is None


def test_resumes_after_an_interrupted_run_without_duplicates(prompts_project, tiny_policy):
    run(
        "generate_candidates",
        "gen",
        "--model",
        tiny_policy,
        "--max-new-tokens",
        "8",
        "--no-progress",
        "--limit",
        "2",
    )
    assert Candidate.objects.count() == 6
    out = run(
        "generate_candidates",
        "gen",
        "--model",
        tiny_policy,
        "--max-new-tokens",
        "8",
        "--no-progress",
    )
    assert "for 3 prompts" in out and "(2 prompts already have them: skipped)" in out
    assert Candidate.objects.count() == 15
    assert "already has candidates" in run(
        "generate_candidates", "gen", "--model", tiny_policy, "--no-progress"
    )


def test_bad_model_path_is_one_clear_sentence(prompts_project, tmp_path):
    with pytest.raises(CommandError) as info:
        run("generate_candidates", "gen", "--model", str(tmp_path / "missing"))
    message = str(info.value)
    assert "missing" in message and "\n" not in message and "Traceback" not in message
    assert not ModelVersion.objects.exists() and not TrainingRun.objects.exists()


@pytest.mark.parametrize("k", ["0", "-1"])
def test_num_candidates_below_one_is_refused_before_loading(prompts_project, tmp_path, k):
    with pytest.raises(CommandError, match="num_candidates must be at least 1"):
        run(
            "generate_candidates",
            "gen",
            "--model",
            str(tmp_path / "missing"),
            "--num-candidates",
            k,
        )
    assert not ModelVersion.objects.exists() and not Candidate.objects.exists()


def test_a_pool_larger_than_k_feeds_the_uncertainty_strategy(
    prompts_project, tiny_policy, tmp_path
):
    """--num-candidates 2K: two comparisons per prompt, the less certain group asked first."""
    from transformers import AutoModelForSequenceClassification

    from annotation.models import Comparison
    from annotation.rules.active import group_uncertainty
    from training.modeling import load_tokenizer
    from training.reward.uncertainty import ensemble_scores

    out = run(
        "generate_candidates", "gen", "--model", tiny_policy, "--max-new-tokens", "8",
        "--num-candidates", "6", "--no-progress", "--name", "tiny-pool",
    )  # fmt: skip
    assert "stored 30 candidates for 5 prompts" in out
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_policy, num_labels=1)
    rm.config.pad_token_id = load_tokenizer(tiny_policy).pad_token_id
    rm.save_pretrained(tmp_path / "rm")
    load_tokenizer(tiny_policy).save_pretrained(tmp_path / "rm")
    out = run(
        "build_comparisons", "gen", "--strategy", "uncertainty",
        "--reward-model", str(tmp_path / "rm"), "--device", "cpu",
    )  # fmt: skip
    assert "built 10 comparisons (uncertainty)" in out
    built = list(Comparison.objects.select_related("prompt").order_by("-priority"))
    assert len({c.priority for c in built}) == 10 and built[-1].priority > 0
    ids = [cid for c in built for cid in c.candidate_ids]
    assert len(ids) == len(set(ids)) == 30  # every pooled candidate in exactly one comparison
    candidates = {c.pk: c for c in Candidate.objects.select_related("prompt")}
    order = sorted(candidates)
    rewards = ensemble_scores(
        [tmp_path / "rm"],
        [candidates[i].prompt.as_model_input() for i in order],
        [candidates[i].text for i in order],
        device="cpu",
    )
    score = dict(zip(order, rewards))
    for prompt in Prompt.objects.filter(project=prompts_project):
        first, second = [c for c in built if c.prompt_id == prompt.pk]  # served in this order
        u = [group_uncertainty([score[i] for i in c.candidate_ids]) for c in (first, second)]
        assert u[0] >= u[1] - 1e-9
