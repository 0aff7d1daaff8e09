"""Resuming checks what the run trains from: policy, reward, judge and prompts, not only
hyperparameters. A mismatch is refused with one line naming what differs."""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")

from training.ppo import PPOConfig, train_ppo  # noqa: E402
from training.ppo.checkpoint import IDENTITY_FILE, checkpoints  # noqa: E402
from training.tiny import build_tiny_causal_lm  # noqa: E402

pytestmark = pytest.mark.ml

TEXTS = [f"the cat number {i} sat on the mat and said hello {i % 7}" for i in range(200)]
PROMPTS = [f"the cat {i}" for i in range(8)]


def count_a(prompts, responses):
    return [float(r.count("a")) for r in responses]


def count_e(prompts, responses):
    return [float(r.count("e")) for r in responses]


CONFIG = PPOConfig(
    total_episodes=8,
    batch_size=4,
    mini_batches=1,
    ppo_epochs=1,
    response_length=4,
    device="cpu",
    eval_every=0,
    save_every=1,
    progress=False,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("identity")
    policy = build_tiny_causal_lm(root / "policy", TEXTS, vocab_size=300)
    out = root / "out"
    train_ppo(policy, count_a, PROMPTS, out, CONFIG, judge=count_e)
    return root, policy, out


def _resume(out, policy, reward=count_a, prompts=PROMPTS, judge=count_e):
    return train_ppo(policy, reward, prompts, out, CONFIG, judge=judge)


def test_the_checkpoint_records_the_identity(run):
    _, policy, out = run
    (_, ckpt), *_ = checkpoints(out)
    identity = json.loads((ckpt / IDENTITY_FILE).read_text())
    assert identity["policy"]["path"] == str(policy.resolve())
    assert len(identity["policy"]["sha256"]) == 64
    assert identity["reward"]["path"].endswith(":count_a")
    assert identity["judge"]["path"].endswith(":count_e")
    assert identity["prompts"]["count"] == len(PROMPTS)
    written = json.loads((out / "training_config.json").read_text())
    assert written["identity"] == identity


@pytest.mark.parametrize(
    "change, message",
    [
        ("policy", "the policy differs"),
        ("reward", "the reward differs"),
        ("judge", "the judge differs"),
        ("no_judge", "the judge differs"),
        ("prompts", "the prompt set differs"),
        ("order", "the prompt set differs"),
    ],
)
def test_a_mismatch_is_refused_with_one_line(run, change, message):
    root, policy, out = run
    kwargs = {}
    if change == "policy":
        kwargs["policy"] = build_tiny_causal_lm(root / "other", TEXTS, vocab_size=300, seed=1)
    elif change == "reward":
        kwargs["reward"] = count_e
    elif change == "judge":
        kwargs["judge"] = count_a
    elif change == "no_judge":
        kwargs["judge"] = None
    elif change == "prompts":
        kwargs["prompts"] = [*PROMPTS, "one more prompt"]
    else:
        kwargs["prompts"] = PROMPTS[::-1]
    before = (out / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match=message) as excinfo:
        _resume(out, kwargs.pop("policy", policy), **kwargs)
    assert "\n" not in str(excinfo.value)
    assert "resume=False" in str(excinfo.value)
    assert (out / "metrics.jsonl").read_text() == before  # nothing changed


def test_a_copy_of_the_same_policy_elsewhere_resumes(run):
    root, policy, out = run
    moved = root / "moved-policy"
    shutil.copytree(policy, moved)
    result = _resume(out, moved)
    assert result.resumed_from == 1


def test_a_checkpoint_without_identity_is_refused(run):
    _, policy, out = run
    (_, ckpt), *_ = checkpoints(out)
    scratch = out.parent / "old-version"
    shutil.copytree(out, scratch)
    (_, old_ckpt), *_ = checkpoints(scratch)
    (old_ckpt / IDENTITY_FILE).unlink()
    from training.ppo.checkpoint import write_manifest

    write_manifest(old_ckpt)  # a complete checkpoint of an older version
    with pytest.raises(ValueError, match="records no policy/reward/prompts identity"):
        _resume(scratch, policy)
