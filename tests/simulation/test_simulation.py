"""Simulated labelers: the noise model (pure), the in-process service and command, HTTP mode."""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Annotation, Comparison, Project
from simulation.labelers import (
    LabelerKind,
    judge_order,
    kinds_for,
    labeler_order,
    order_to_tiers,
    plackett_luce_order,
    simulated_labelers,
)
from simulation.run import JudgeError, judge_scores
from training.callables import CallableLoadError, load_callable
from training.evaluation import ranking_agreement_with_judge

JUDGE = "tests.simulation.test_simulation:length_judge"
TEXTS = ["a", "bb bb", "ccc ccc ccc", "dddd dddd dddd dddd"]  # the judge likes longer answers

SEEN_PROMPTS: list = []


def length_judge(prompts: list, responses: list[str]) -> list[float]:
    """A tiny gold judge for tests: longer is better."""
    return [float(len(r)) for r in responses]


def recording_judge(prompts: list, responses: list[str]) -> list[float]:
    """The length judge that also keeps the prompts it was given."""
    SEEN_PROMPTS.extend(prompts)
    return length_judge(prompts, responses)


def broken_judge(prompts: list, responses: list[str]) -> list[float]:
    return [1.0]


NOT_CALLABLE = 42


def agreement_over_samples(scores: list[float], temperature: float, n: int, seed: int = 0):
    """Mean pairwise agreement with the judge of `n` Plackett-Luce samples."""
    rng = random.Random(seed)
    by_id = dict(enumerate(scores))
    agree = judged = 0.0
    for _ in range(n):
        order = plackett_luce_order(scores, temperature, rng)
        agreement = ranking_agreement_with_judge([[i] for i in order], by_id, judge_ties="exclude")
        agree += agreement.agree
        judged += agreement.pairs
    return agree / judged


# ---------------------------------------------------------------------------------------
# The noise model (pure)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, 1e-9, 1e-4])
def test_temperature_to_zero_gives_the_judge_order(temperature):
    scores = [0.1, 0.9, 0.5, 0.3]
    rng = random.Random(1)
    for _ in range(200):
        assert plackett_luce_order(scores, temperature, rng) == [1, 2, 3, 0]


def test_zero_temperature_breaks_ties_at_random():
    rng = random.Random(2)
    orders = Counter(tuple(plackett_luce_order([1.0, 1.0, 0.0], 0.0, rng)) for _ in range(400))
    assert set(orders) == {(0, 1, 2), (1, 0, 2)}
    assert 150 < orders[(0, 1, 2)] < 250


def test_plackett_luce_matches_hand_computed_probabilities():
    # Utilities log 3 and 0 at T=1: the first wins with exp(log 3) / (3 + 1) = 3/4.
    rng = random.Random(3)
    n = 8000
    first = sum(plackett_luce_order([math.log(3), 0.0], 1.0, rng)[0] == 0 for _ in range(n))
    assert abs(first / n - 0.75) < 0.02
    # Three items, utilities log 4, log 2, 0 at T=1: P(order 0,1,2) = 4/7 * 2/3 = 8/21.
    orders = Counter(
        tuple(plackett_luce_order([math.log(4), math.log(2), 0.0], 1.0, rng)) for _ in range(n)
    )
    assert abs(orders[(0, 1, 2)] / n - 8 / 21) < 0.02
    # P(order 2,1,0) = 1/7 * 2/6 = 1/21.
    assert abs(orders[(2, 1, 0)] / n - 1 / 21) < 0.01


def test_temperature_divides_the_scores():
    # Scores 2 log 3 and 0 at T=2 are the utilities log 3 and 0 of the previous test.
    rng = random.Random(4)
    n = 8000
    first = sum(plackett_luce_order([2 * math.log(3), 0.0], 2.0, rng)[0] == 0 for _ in range(n))
    assert abs(first / n - 0.75) < 0.02


def test_agreement_falls_toward_chance_as_temperature_rises():
    scores = [0.0, 0.25, 0.5, 0.75]
    low = agreement_over_samples(scores, 0.01, 500)
    mid = agreement_over_samples(scores, 0.25, 2000)
    high = agreement_over_samples(scores, 100.0, 4000)
    assert low == 1.0
    assert 0.6 < mid < 0.95
    assert abs(high - 0.5) < 0.03
    assert agreement_over_samples(scores, math.inf, 2000) == pytest.approx(0.5, abs=0.03)


def test_random_kind_ignores_the_scores():
    rng = random.Random(5)
    n = 4000
    firsts = Counter(
        labeler_order("random", [0.0, 0.0, 0.0, 10.0], temperature=0.0, rng=rng)[0]
        for _ in range(n)
    )
    # At T=0 a noisy labeler would always put index 3 first; a random one does so 1/4 of the time.
    assert all(abs(firsts[i] / n - 0.25) < 0.03 for i in range(4))


def test_adversarial_kind_reverses_the_judge():
    rng = random.Random(6)
    for _ in range(50):
        order = labeler_order(
            LabelerKind.ADVERSARIAL, [0.1, 0.9, 0.5, 0.3], temperature=5.0, rng=rng
        )
        assert order == [0, 3, 2, 1]


def test_bad_inputs_are_refused():
    rng = random.Random(0)
    with pytest.raises(ValueError, match="temperature"):
        plackett_luce_order([1.0, 2.0], -1.0, rng)
    with pytest.raises(ValueError, match="finite"):
        plackett_luce_order([1.0, math.nan], 1.0, rng)
    with pytest.raises(ValueError):
        labeler_order("lazy", [1.0], temperature=1.0, rng=rng)


def test_order_to_tiers_strict_and_with_ties():
    scores = {10: 0.9, 11: 0.88, 12: 0.5, 13: 0.1}
    order = [10, 11, 12, 13]
    assert order_to_tiers(order, scores) == [[10], [11], [12], [13]]
    assert order_to_tiers(order, scores, ties=True, epsilon=0.05) == [[10, 11], [12], [13]]
    assert order_to_tiers(order, scores, ties=True, epsilon=0.0) == [[10], [11], [12], [13]]
    # Ties join the tier's first member only: 0.9 -> 0.88 -> 0.86 does not chain past 0.05.
    chain = {1: 0.9, 2: 0.87, 3: 0.84}
    assert order_to_tiers([1, 2, 3], chain, ties=True, epsilon=0.05) == [[1, 2], [3]]


def test_kinds_for_counts_labelers_by_share():
    assert kinds_for(4) == [LabelerKind.NOISY] * 4
    kinds = kinds_for(10, random_share=0.2, adversarial_share=0.1)
    assert Counter(kinds) == {"noisy": 7, "random": 2, "adversarial": 1}
    assert Counter(kinds_for(3, random_share=0.01)) == {"noisy": 2, "random": 1}
    with pytest.raises(ValueError, match="exceed"):
        kinds_for(4, random_share=0.6, adversarial_share=0.6)
    with pytest.raises(ValueError, match="between 0 and 1"):
        kinds_for(4, random_share=1.5)
    with pytest.raises(ValueError, match="cannot hold"):
        kinds_for(1, random_share=0.5, adversarial_share=0.5)


def test_simulated_labelers_repeat_with_the_same_seed():
    def run(seed):
        labelers = simulated_labelers(["a", "b"], noise=1.0, seed=seed)
        return [lab.rank([1, 2, 3, 4], [0.0, 0.1, 0.2, 0.3]) for lab in labelers for _ in range(5)]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_labels_do_not_depend_on_the_order_candidates_are_served_in():
    # The display order is shuffled per (comparison, labeler) primary key, so another
    # database serves the same comparison in another order: the same seed must still give
    # the same labels (the loop's figures would otherwise move from run to run).
    ids, scores = [11, 12, 13, 14], [0.2, 0.9, 0.5, 0.6]
    served = [
        (ids, scores),
        ([14, 12, 11, 13], [0.6, 0.9, 0.2, 0.5]),
        ([13, 14, 12, 11], [0.5, 0.6, 0.9, 0.2]),
    ]
    labels = []
    for order, values in served:
        (labeler,) = simulated_labelers(["a"], noise=1.0, seed=3)
        labels.append([labeler.rank(order, values) for _ in range(20)])
    assert labels[0] == labels[1] == labels[2]
    assert len({str(r) for r in labels[0]}) > 1  # noise 1.0 does vary the order


def test_ranking_agreement_with_judge_by_hand():
    scores = {1: 3.0, 2: 2.0, 3: 1.0, 4: 1.0}
    # (1,2) agree, (1,3) agree, (2,3) tied in the label: half, (1,4) (2,4) agree,
    # (3,4) equal judge scores: not judged, however the label orders it.
    agreement = ranking_agreement_with_judge([[1], [2, 3], [4]], scores, judge_ties="exclude")
    assert (agreement.agree, agreement.pairs) == (4.5, 5)
    reversed_ = ranking_agreement_with_judge([[4], [3], [2], [1]], scores, judge_ties="exclude")
    assert (reversed_.agree, reversed_.pairs) == (0.0, 5)
    # Counting the judge's tie (3,4) as half instead:
    half = ranking_agreement_with_judge([[1], [2, 3], [4]], scores, judge_ties="half")
    assert (half.agree, half.pairs) == (5.0, 6)


def test_judge_order_puts_best_first():
    assert judge_order([3.0, 1.0, 2.0], random.Random(0)) == [0, 2, 1]


# ---------------------------------------------------------------------------------------
# Judges
# ---------------------------------------------------------------------------------------


def test_load_callable_finds_the_test_judge():
    assert load_callable(JUDGE) is length_judge


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "not of the form module:function"),
        ("nowhere_module_xyz:judge", "no such module"),
        ("tests.simulation.test_simulation:missing", "has no attribute 'missing'"),
        ("tests.simulation.test_simulation:NOT_CALLABLE", "not a callable"),
    ],
)
def test_load_callable_explains_what_is_wrong(spec, message):
    with pytest.raises(CallableLoadError, match=message):
        load_callable(spec)


def test_load_callable_imports_from_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "my_world_judge_mod.py").write_text(
        "def judge(prompts, responses):\n    return [1.0 for _ in responses]\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p != str(tmp_path)])
    judge = load_callable("my_world_judge_mod:judge")
    assert judge(["p"], ["r"]) == [1.0]


def test_load_callable_reports_errors_raised_on_import(tmp_path, monkeypatch):
    (tmp_path / "raising_judge_mod.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CallableLoadError, match="RuntimeError: boom"):
        load_callable("raising_judge_mod:judge")


def test_judge_scores_checks_what_the_judge_returns():
    assert judge_scores(length_judge, "p", ["a", "bbb"]) == [1.0, 3.0]
    with pytest.raises(JudgeError, match="1 scores for 2 responses"):
        judge_scores(broken_judge, "p", ["a", "b"])
    with pytest.raises(JudgeError, match="non-finite"):
        judge_scores(lambda p, r: [math.inf] * len(r), "p", ["a"])
    with pytest.raises(JudgeError, match="raised ZeroDivisionError"):
        judge_scores(lambda p, r: [1 / 0], "p", ["a"])


# ---------------------------------------------------------------------------------------
# In process: the service through the command
# ---------------------------------------------------------------------------------------


def agreement_in_db(project: Project) -> float:
    """Pairwise agreement with the length judge of every annotation stored in the project."""
    agree = judged = 0.0
    for annotation in Annotation.objects.filter(comparison__project=project):
        lengths = {c.pk: float(len(c.text)) for c in annotation.comparison.candidates.all()}
        agreement = ranking_agreement_with_judge(annotation.ranking, lengths, judge_ties="exclude")
        agree += agreement.agree
        judged += agreement.pairs
    return agree / judged


@pytest.fixture
def small_project(make_project, make_comparisons):
    project = make_project("sim", num_candidates=4, overlap=2, allow_ties=False)
    make_comparisons(project, 6, texts=TEXTS)
    return project


def simulate(*args, **opts):
    from io import StringIO

    out = StringIO()
    call_command("simulate_labelers", *args, stdout=out, stderr=StringIO(), **opts)
    return out.getvalue()


def test_command_drains_a_project_with_the_judges_order_at_low_noise(small_project):
    output = simulate("sim", "--judge", JUDGE, "--labelers", "3", "--noise", "0.001")

    assert "12 annotations by 3 labelers" in output
    assert "agreement with the judge 1.000 over 72 pairs" in output
    comparisons = Comparison.objects.filter(project=small_project)
    assert all(c.status == "complete" and c.submitted_count == 2 for c in comparisons)
    annotations = Annotation.objects.filter(comparison__project=small_project)
    assert annotations.count() == 12
    assert agreement_in_db(small_project) == 1.0
    users = {a.labeler.username for a in annotations}
    assert users <= {"sim-sim-1", "sim-sim-2", "sim-sim-3"}
    assert len(users) >= 2
    assert small_project.members.filter(username__startswith="sim-sim-").count() == 3
    # Each comparison is answered by two different labelers (the engine's invariant).
    pairs = Counter(annotations.values_list("labeler_id", "comparison_id"))
    assert max(pairs.values()) == 1


def test_high_noise_and_adversarial_labelers_disagree_with_the_judge(small_project):
    simulate("sim", "--judge", JUDGE, "--labelers", "2", "--noise", "0", "--adversarial-share", "1")
    assert agreement_in_db(small_project) == 0.0


def test_high_noise_agreement_is_near_chance(make_project, make_comparisons):
    project = make_project("noisy", num_candidates=4, overlap=4, allow_ties=False)
    make_comparisons(project, 25, texts=TEXTS)
    output = simulate(
        "noisy", "--judge", JUDGE, "--labelers", "4", "--noise", "1000", "--seed", "3"
    )
    assert "100 annotations" in output
    assert abs(agreement_in_db(project) - 0.5) < 0.1


def test_max_annotations_stops_early_and_a_rerun_reuses_accounts(small_project):
    output = simulate(
        "sim", "--judge", JUDGE, "--labelers", "2", "--noise", "0", "--max-annotations", "5"
    )
    assert "5 annotations by 2 labelers" in output
    assert Annotation.objects.filter(comparison__project=small_project).count() == 5
    output = simulate("sim", "--judge", JUDGE, "--labelers", "2", "--noise", "0")
    assert "7 annotations" in output
    assert small_project.members.count() == 2


def test_ties_within_epsilon_where_the_project_allows_them(make_project, make_comparisons):
    project = make_project("ties", num_candidates=4, overlap=1, allow_ties=True)
    make_comparisons(project, 2, texts=["aa", "bb", "ccc ccc", "d"])
    simulate("ties", "--judge", JUDGE, "--labelers", "1", "--noise", "0", "--tie-epsilon", "0.5")
    for annotation in Annotation.objects.filter(comparison__project=project):
        texts = [
            [annotation.comparison.candidates.get(pk=i).text for i in t] for t in annotation.ranking
        ]
        assert texts[0] == ["ccc ccc"]
        assert sorted(texts[1]) == ["aa", "bb"]
        assert texts[2] == ["d"]


def test_judge_gets_plain_text_or_the_whole_chat(make_project):
    from annotation.services.comparisons import comparisons_build
    from annotation.services.imports import (
        candidate_record,
        candidates_import,
        prompt_record,
        prompts_import,
    )

    project = make_project("mixed", num_candidates=2, overlap=1)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}]
    prompts_import(
        project=project,
        records=[
            prompt_record({"external_id": "t", "text": "Plain?"}, line=1),
            prompt_record({"external_id": "c", "messages": chat}, line=2),
        ],
    )
    candidates_import(
        project=project,
        records=[
            candidate_record({"prompt_external_id": pid, "text": text, "model": "m"}, line=n)
            for n, (pid, text) in enumerate(
                [("t", "x"), ("t", "yy"), ("c", "x"), ("c", "yy")], start=1
            )
        ],
    )
    comparisons_build(project=project)
    SEEN_PROMPTS.clear()
    simulate(
        "mixed",
        "--judge",
        "tests.simulation.test_simulation:recording_judge",
        "--labelers",
        "1",
        "--noise",
        "0",
    )
    assert sorted(SEEN_PROMPTS, key=str) == sorted(["Plain?", "Plain?", chat, chat], key=str)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--judge", "nowhere_module_xyz:judge"], "--judge: cannot import 'nowhere_module_xyz'"),
        (["--judge", "judge_without_colon"], "--judge: 'judge_without_colon' is not of the form"),
        (["--judge", "tests.simulation.test_simulation:broken_judge"], "1 scores for 4 responses"),
        (["--judge", JUDGE, "--url", "http://127.0.0.1:9"], "--url and --tokens go together"),
        (["--judge", JUDGE, "--random-share", "0.6", "--adversarial-share", "0.6"], "exceed"),
    ],
)
def test_bad_options_give_a_clear_command_error(small_project, args, message):
    with pytest.raises(CommandError, match=message):
        simulate("sim", "--labelers", "2", "--noise", "1", *args)
    assert not Annotation.objects.exists()


def test_unknown_project_and_bad_numbers(small_project):
    with pytest.raises(CommandError, match="No project with slug 'nope'"):
        simulate("nope", "--judge", JUDGE, "--labelers", "1", "--noise", "1")
    with pytest.raises(CommandError, match="--noise"):
        simulate("sim", "--judge", JUDGE, "--labelers", "1", "--noise", "-1")
    with pytest.raises(CommandError, match="--labelers"):
        simulate("sim", "--judge", JUDGE, "--labelers", "0", "--noise", "1")


# ---------------------------------------------------------------------------------------
# Over HTTP against a live server
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_http_mode_drains_a_project_through_a_live_server(live_server, tmp_path, make_comparisons):
    from django.db import connection

    from annotation.services.projects import labeler_create, project_create

    project = project_create(slug="live-sim", num_candidates=4, overlap=2, allow_ties=False)
    make_comparisons(project, 5, texts=TEXTS)
    tokens = [labeler_create(username=f"h{i}", projects=[project])[1] for i in range(3)]
    token_file = tmp_path / "tokens.txt"
    token_file.write_text("# one per line\n" + "\n".join(tokens) + "\n")
    # An in-memory SQLite test database is one connection that the live server's threads
    # share, so concurrent requests trip over each other there; a file or PostgreSQL is fine.
    labelers = 1 if connection.vendor == "sqlite" and connection.is_in_memory_db() else 3

    output = simulate(
        "live-sim",
        "--judge",
        JUDGE,
        "--labelers",
        str(labelers),
        "--noise",
        "0",
        "--url",
        live_server.url,
        "--tokens",
        str(token_file),
    )

    # With one labeler, overlap 2 leaves each comparison one annotation short.
    expected = 10 if labelers > 1 else 5
    assert f"{expected} annotations by {labelers} labelers" in output
    assert "agreement with the judge 1.000" in output
    annotations = Annotation.objects.filter(comparison__project=project)
    assert annotations.count() == expected
    assert {a.labeler.username for a in annotations} <= {"h0", "h1", "h2"}
    assert Counter(annotations.values_list("labeler_id", "comparison_id")).most_common(1)[0][1] == 1
    if labelers > 1:
        assert not Comparison.objects.filter(project=project, status="open").exists()
    assert agreement_in_db(project) == 1.0

    with pytest.raises(CommandError, match="holds 3 tokens, 4 labelers"):
        simulate(
            "live-sim", "--judge", JUDGE, "--labelers", "4", "--noise", "0",
            "--url", live_server.url, "--tokens", str(token_file),
        )  # fmt: skip
    with pytest.raises(CommandError, match="'nope' is not among this labeler's projects"):
        simulate(
            "nope", "--judge", JUDGE, "--labelers", "1", "--noise", "0",
            "--url", live_server.url, "--tokens", str(token_file),
        )  # fmt: skip


def test_the_labelers_the_loop_and_the_http_backend_import_neither_django_nor_torch():
    import subprocess
    import sys

    code = (
        "import sys, simulation.labelers, simulation.backends, simulation.run; "
        "print(sorted(m for m in ('django', 'torch', 'requests') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.stdout.strip() == "[]"


def test_a_demonstration_project_is_refused_before_any_account(make_project, make_comparisons):
    # Simulated labelers rank; they used to fail on the first writing task, after making an
    # account and a lease.
    from django.contrib.auth import get_user_model

    from annotation.models import Assignment, TaskType

    project = make_project("writers", task_type=TaskType.DEMONSTRATION)
    make_comparisons(project, 1)
    users = get_user_model().objects.count()
    with pytest.raises(CommandError, match="collects demonstrations: simulated labelers rank"):
        simulate("writers", "--judge", JUDGE, "--labelers", "2", "--noise", "1")
    assert get_user_model().objects.count() == users and not Assignment.objects.exists()
