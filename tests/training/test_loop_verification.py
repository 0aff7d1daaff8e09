"""The loop's human-side check: a fresh labeling round of the start and the new policy."""

from __future__ import annotations

import pytest

from annotation.services.imports import parse_prompt_file


@pytest.mark.django_db
def test_the_verification_round_samples_each_policy_under_its_own_seed(monkeypatch, tmp_path):
    # Under one seed the two policies shared each token's draw (Gumbel-max keyed by seed,
    # prompt and sample): they wrote one text wherever they agreed most, a project stores a
    # text once, and 21 of 48 held-out prompts dropped out of labeler_win_rate.
    import training.loop as loop
    from training.evaluation import EVAL_TEMPERATURE

    calls = []

    def generate(slug, model, config, *, seed, k=None, name=None, temperature=None):
        calls.append({"model": model, "seed": seed, "k": k, "temperature": temperature})
        return ""

    monkeypatch.setattr(loop, "_generate", generate)
    monkeypatch.setattr(loop, "_run", lambda *args, **kwargs: "")
    monkeypatch.setattr(loop, "_simulate", lambda *args, **kwargs: "")
    monkeypatch.setattr(loop, "head_to_head_outcomes", lambda project: [])
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"text": "What is 1 + 1?"}\n{"text": "What is 2 + 2?"}\n')
    loop._labeler_round(
        slug="t",
        eval_records=parse_prompt_file(prompts),
        start="start-dir",
        new="new-dir",
        new_name="new",
        judge_spec="x:y",
        config=loop.LoopConfig(),
        log=lambda message: None,
    )
    start, new = calls
    assert (start["model"], new["model"]) == ("start-dir", "new-dir")
    assert start["seed"] != new["seed"]
    # At the temperature win_rate_vs_start is measured at, so the two win rates compare.
    assert start["temperature"] == new["temperature"] == EVAL_TEMPERATURE
    assert start["k"] == new["k"] == 1
