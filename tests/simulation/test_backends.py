"""Both backends through the one loop: same prompts to the judge, same ties, one call each."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.test import Client

from annotation.models import Annotation
from annotation.services.tokens import api_token_issue
from simulation.backends import HttpBackend, LabelerClient, Served
from simulation.labelers import simulated_labelers
from simulation.run import play
from simulation.services import ServiceBackend, labelers_simulate

ONE_TURN_CHAT = [{"role": "user", "content": "Hi?"}]
TEXTS = ["aa", "bb", "ccc"]  # the length judge ties "aa" and "bb"


class _Response:
    def __init__(self, response):
        self.status_code = response.status_code
        self.text = response.content.decode()
        self._response = response

    def json(self):
        return self._response.json()


class _TestClientSession:
    """requests.Session's get/post answered by Django's test client: HTTP without a server.

    The test database is one uncommitted transaction that a live server's threads could not
    see; this keeps the HTTP backend's requests and payload parsing in this thread.
    """

    def __init__(self, token: str):
        self.client = Client(HTTP_AUTHORIZATION=f"Token {token}")

    def get(self, url, timeout=None):
        return _Response(self.client.get(urlsplit(url).path))

    def post(self, url, json=None, timeout=None):
        path = urlsplit(url).path
        return _Response(self.client.post(path, json or {}, content_type="application/json"))

    def close(self):
        pass


class _RecordingJudge:
    def __init__(self):
        self.calls: list[tuple] = []

    def __call__(self, prompts, responses):
        self.calls.append((prompts[0], sorted(responses)))
        return [float(len(r)) for r in responses]


@pytest.fixture
def make_chat_project(make_project):
    """A project (ties allowed) with a one-turn chat and a plain-text prompt, 3 candidates each."""
    from annotation.services.comparisons import comparisons_build
    from annotation.services.imports import (
        candidate_record,
        candidates_import,
        prompt_record,
        prompts_import,
    )

    def make(slug):
        project = make_project(slug, num_candidates=3, overlap=2, allow_ties=True)
        prompts_import(
            project=project,
            records=[
                prompt_record({"external_id": "chat", "messages": ONE_TURN_CHAT}, line=1),
                prompt_record({"external_id": "text", "text": "Plain?"}, line=2),
            ],
        )
        rows = [
            {"prompt_external_id": pid, "text": text, "model": "m"}
            for pid in ("chat", "text")
            for text in TEXTS
        ]
        candidates_import(
            project=project,
            records=[candidate_record(row, line=n) for n, row in enumerate(rows, start=1)],
        )
        comparisons_build(project=project)
        return project

    return make


def _rankings_as_texts(project) -> list:
    """Each stored ranking as sorted tiers of texts, sorted: comparable across projects."""
    rankings = []
    for annotation in Annotation.objects.filter(comparison__project=project):
        text = {c.pk: c.text for c in annotation.comparison.candidates.all()}
        rankings.append([sorted(text[i] for i in tier) for tier in annotation.ranking])
    return sorted(rankings)


def test_in_process_and_http_backends_give_the_judge_the_same_and_agree(
    make_chat_project, make_labeler
):
    in_process, over_http = _RecordingJudge(), _RecordingJudge()

    local = make_chat_project("local")
    local_result = labelers_simulate(
        project=local, judge=in_process, labelers=2, noise=0.0, tie_epsilon=0.0
    )

    remote = make_chat_project("remote")
    tokens = []
    for i in range(2):
        user = make_labeler(f"h{i}", projects=[remote])
        tokens.append(api_token_issue(user))
    players = []
    for labeler, token in zip(
        simulated_labelers(["h0", "h1"], noise=0.0, tie_epsilon=0.0), tokens, strict=True
    ):
        client = LabelerClient("http://testserver", token)
        client.session = _TestClientSession(token)
        players.append((labeler, HttpBackend(client, remote.slug)))
    allow_ties = players[0][1].client.project(remote.slug)["allow_ties"]
    http_result = play(players, judge=over_http, allow_ties=allow_ties)

    # The one-turn chat reaches the judge as the whole chat both ways, the text as text.
    expected = sorted([(ONE_TURN_CHAT, TEXTS), ("Plain?", TEXTS)], key=str)
    assert sorted(in_process.calls, key=str) == expected
    # Scores are cached per comparison both ways: one judge call each, though two labelers
    # annotated every comparison.
    assert sorted(over_http.calls, key=str) == expected
    assert local_result.annotations == http_result.annotations == 4
    # The same tie rule: the judge's equal scores are one tier, both ways.
    assert _rankings_as_texts(local) == _rankings_as_texts(remote) == [[["ccc"], ["aa", "bb"]]] * 4
    assert local_result.summary().split(" in ")[0] == http_result.summary().split(" in ")[0]
    assert (local_result.agree, local_result.judged_pairs) == (
        http_result.agree,
        http_result.judged_pairs,
    )


def test_the_in_process_backend_serves_the_prompt_as_judges_get_it(make_chat_project, make_labeler):
    project = make_chat_project("served")
    user = make_labeler("solo", projects=[project])
    served = ServiceBackend(project, user).next()
    assert isinstance(served, Served)
    assert served.prompt == ONE_TURN_CHAT
    assert sorted(served.texts) == TEXTS
