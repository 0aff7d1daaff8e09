"""Prompt preparation at import: personal data, length, duplicates, the per-source cap, the
command's table and side file, and that bad input changes nothing."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Prompt
from annotation.rules import pii
from annotation.rules.promptprep import PrepOptions, PromptFilter


def user(text):
    return [{"role": "user", "content": text}]


# ----------------------------------------------------------------------------- pii (pure)


@pytest.mark.parametrize(
    "text, kinds",
    [
        ("write to jane.roe+lists@mail.example.org today", ["EMAIL"]),
        ("call (415) 555-2671 after six", ["PHONE"]),
        ("from London: +44 20 7946 0958", ["PHONE"]),
        ("card 4111 1111 1111 1111 exp 12/29", ["CARD"]),
        ("card 5500-0000-0000-0004", ["CARD"]),
        ("ssh to 10.0.0.12 or 2001:db8::ff00:42:8329", ["IP", "IP"]),
        ("mail a@b.io, phone +1 650-253-0000", ["EMAIL", "PHONE"]),
    ],
)
def test_pii_found(text, kinds):
    assert [f.kind for f in pii.find_pii(text)] == kinds


@pytest.mark.parametrize(
    "text",
    [
        "What is 1234567 + 89?",
        "The years 1999-2024 and the ratio 3:4:5 at 10:30:45",
        "4111 1111 1111 1112 fails the Luhn check",
        "version 1.2.3.4.5 and 300.1.1.1 are not addresses",
        "std::vector and a::b are C++",
        "an @mention and user@localhost",
    ],
)
def test_pii_not_found_in_ordinary_text(text):
    assert pii.find_pii(text) == []


def test_redact_uses_typed_placeholders_and_counts():
    text, counts = pii.redact("mail x@y.com or x@y.com, call +1 650-253-0000")
    assert text == "mail [EMAIL] or [EMAIL], call [PHONE]"
    assert counts == {"EMAIL": 2, "PHONE": 1}


# ----------------------------------------------------------------------- filters (pure)


def run(options, rows):
    """rows: (text, source, has_external_id) -> list of (kept, filter, text)."""
    rules = PromptFilter(options)
    out = []
    for text, source, has_id in rows:
        d = rules.clean(user(text))
        if d.keep:
            d = rules.dedupe(d.messages, source=source, has_external_id=has_id)
        out.append((d.keep, d.filter, d.messages[0]["content"]))
    return out, rules


def test_options_are_checked():
    for bad in (
        {"dedup": "fuzzy"},
        {"pii": "mask"},
        {"near_threshold": 0},
        {"near_threshold": 0.99},
        {"min_chars": 10, "max_chars": 5},
        {"max_per_source": 0},
    ):
        with pytest.raises(ValueError):
            PrepOptions(**bad)


def test_length_bounds():
    out, rules = run(
        PrepOptions(min_chars=5, max_chars=10),
        [("hey", None, False), ("hello", None, False), ("x" * 11, None, False)],
    )
    assert [o[:2] for o in out] == [(False, "length"), (True, None), (False, "length")]
    assert rules.removed == {"length": 2}


def test_exact_duplicates_removed_except_rows_with_an_external_id():
    rows = [("Same prompt", None, False), ("Same prompt", None, False), ("Same prompt", None, True)]
    out, _ = run(PrepOptions(dedup="exact"), rows)
    assert [o[:2] for o in out] == [(True, None), (False, "exact"), (True, None)]
    out, _ = run(PrepOptions(dedup="none"), rows)
    assert all(o[0] for o in out)


def test_near_duplicates_found_by_minhash_and_distinct_prompts_kept():
    base = (
        "Explain how a transformer language model uses attention to weigh the words of a sentence."
    )
    rows = [
        (base, None, False),
        (base.replace("weigh", "weight"), None, False),  # one word changed
        ("  " + base.upper() + "  ", None, True),  # case and spaces only, and it has an id
        ("Write a haiku about the sea at night, with the moon on the water.", None, False),
        ("Give three tips for keeping a sourdough starter alive in a cold kitchen.", None, False),
    ]
    out, rules = run(PrepOptions(dedup="near", near_threshold=0.8), rows)
    assert [o[:2] for o in out] == [
        (True, None),
        (False, "near"),
        (False, "near"),
        (True, None),
        (True, None),
    ]
    # Deterministic: a second run decides the same.
    assert run(PrepOptions(dedup="near", near_threshold=0.8), rows)[0] == out
    # A strict threshold keeps the one-word edit.
    out, _ = run(PrepOptions(dedup="near", near_threshold=0.98), rows[:2])
    assert [o[0] for o in out] == [True, True]


def test_pii_redact_then_dedupe_on_the_redacted_text():
    rows = [("mail me at a@b.com", None, False), ("mail me at c@d.com", None, False)]
    out, rules = run(PrepOptions(pii="redact"), rows)
    assert out == [(True, None, "mail me at [EMAIL]"), (False, "exact", "mail me at [EMAIL]")]
    assert rules.redacted == {"EMAIL": 2}
    out, rules = run(PrepOptions(pii="drop"), rows + [("no personal data", None, False)])
    assert [o[:2] for o in out] == [(False, "pii"), (False, "pii"), (True, None)]


def test_cap_per_source_keeps_the_first_in_file_order():
    rows = [(f"prompt {i}", "forum" if i % 3 else "docs", False) for i in range(9)]
    out, rules = run(PrepOptions(max_per_source=2), rows)
    kept = [text for keep, _, text in out if keep]
    assert kept == ["prompt 0", "prompt 1", "prompt 2", "prompt 3"]
    assert rules.removed == {"source": 5}


def test_rows_without_a_source_are_not_capped():
    # One bucket for every source-less row kept only N prompts of a file that names none.
    rows = [(f"prompt {i}", None if i < 5 else "forum", False) for i in range(8)]
    out, rules = run(PrepOptions(max_per_source=2), rows)
    kept = [text for keep, _, text in out if keep]
    assert kept == [f"prompt {i}" for i in range(7)]
    assert rules.removed == {"source": 1}


# --------------------------------------------------------------------- command (database)


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.django_db
def test_command_prints_the_table_and_writes_removed_rows(project, tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"external_id": "1", "text": "Summarise the plot of Hamlet in two sentences, please."},
            {"external_id": "2", "text": "Summarise the plot of Hamlet in two sentences please!"},
            {"text": "Email bob@example.com the minutes of the meeting.", "source": "mail"},
            {"text": "ok"},
            {"text": "What is a monad?", "source": "forum"},
            {"text": "What is a functor?", "source": "forum"},
        ],
    )
    out = tmp_path / "review" / "removed.jsonl"
    stdout = io.StringIO()
    call_command(
        "import_prompts", "demo", str(path), "--dedup", "near", "--pii", "redact",
        "--min-chars", "5", "--max-per-source", "1", "--removed-out", str(out), stdout=stdout,
    )  # fmt: skip
    printed = stdout.getvalue()
    assert "removed: near" in printed and "removed: length" in printed
    assert "redacted (EMAIL x1)" in printed and "created 3, unchanged 0" in printed
    removed = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["line"], r["filter"]) for r in removed] == [
        (2, "near"),
        (4, "length"),
        (6, "source"),
    ]
    assert (
        removed[0]["external_id"] == "2"
        and removed[2]["messages"][0]["content"] == "What is a functor?"
    )
    redacted = Prompt.objects.get(source="p.jsonl", metadata__source="mail")
    assert redacted.messages[0]["content"] == "Email [EMAIL] the minutes of the meeting."
    assert redacted.metadata["pii_redacted"] == {"EMAIL": 1}

    # Importing the same file again is idempotent: the stored rows count as unchanged.
    stdout = io.StringIO()
    call_command(
        "import_prompts", "demo", str(path), "--dedup", "near", "--pii", "redact",
        "--min-chars", "5", "--max-per-source", "1", "--removed-out", str(out), stdout=stdout,
    )  # fmt: skip
    assert "created 0, unchanged 3" in stdout.getvalue()
    assert Prompt.objects.count() == 3


@pytest.mark.django_db
def test_near_duplicates_of_stored_prompts_are_removed(project, tmp_path):
    first = write_jsonl(
        tmp_path / "a.jsonl", [{"text": "How do I reverse a linked list in place in C?"}]
    )
    call_command("import_prompts", "demo", str(first), stdout=io.StringIO())
    second = write_jsonl(
        tmp_path / "b.jsonl", [{"text": "How do I reverse a linked list in place in C ?"}]
    )
    call_command("import_prompts", "demo", str(second), "--dedup", "near", stdout=io.StringIO())
    assert Prompt.objects.count() == 1
    assert (tmp_path / "b.jsonl.removed.jsonl").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("dedup", ["exact", "near"])
def test_a_second_copy_of_a_stored_prompt_is_a_duplicate(project, tmp_path, dedup):
    text = "The quick brown fox jumps over the lazy dog near the river bank."
    first = write_jsonl(tmp_path / "a.jsonl", [{"external_id": "a", "text": text}])
    call_command("import_prompts", "demo", str(first), stdout=io.StringIO())
    rows = [
        {"external_id": "a", "text": text},  # the stored row itself: unchanged
        {"text": text},  # a copy without an id
        {"external_id": "b", "text": text},  # a copy under a new id
        {"text": text.replace("river", "rivers")},  # a near copy
    ]
    second = write_jsonl(tmp_path / "b.jsonl", rows)
    stdout = io.StringIO()
    call_command("import_prompts", "demo", str(second), "--dedup", dedup, stdout=stdout)
    removed = [json.loads(line) for line in (tmp_path / "b.jsonl.removed.jsonl").open()]
    if dedup == "near":
        assert [(r["line"], r["filter"]) for r in removed] == [
            (2, "exact"),
            (3, "exact"),
            (4, "near"),
        ]
        assert "created 0, unchanged 1" in stdout.getvalue()
        assert list(Prompt.objects.values_list("external_id", flat=True)) == ["a"]
    else:
        # Exact: a row with its own external_id is its own prompt, as within one file.
        assert [(r["line"], r["filter"]) for r in removed] == [(2, "exact")]
        assert "created 2, unchanged 1" in stdout.getvalue()
        kept = Prompt.objects.order_by("id").values_list("external_id", flat=True)
        assert list(kept) == ["a", "b", None]  # None: the near copy, kept by exact


@pytest.mark.django_db
def test_defaults_keep_todays_behaviour(project, tmp_path):
    rows = [
        {"text": "same"},
        {"text": "same"},
        {"external_id": "x", "text": "same"},
        {"text": "a@b.com"},
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    call_command("import_prompts", "demo", str(path), stdout=io.StringIO())
    assert sorted(p.messages[0]["content"] for p in Prompt.objects.all()) == [
        "a@b.com",
        "same",
        "same",
    ]


@pytest.mark.django_db
def test_bad_line_or_option_changes_nothing(project, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "x@y.com"}\n{"text": 3}\n')
    with pytest.raises(CommandError, match=r"p\.jsonl:3"):
        call_command("import_prompts", "demo", str(path), "--pii", "drop")
    assert not (tmp_path / "p.jsonl.removed.jsonl").exists()
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(CommandError, match="min_chars 9 is above max_chars 2"):
        call_command("import_prompts", "demo", str(path), "--min-chars", "9", "--max-chars", "2")
    write_jsonl(path, [{"text": "fine"}, {"text": "bad source", "source": 7}])
    with pytest.raises(CommandError, match=r"p\.jsonl:2: 'source' must be text"):
        call_command("import_prompts", "demo", str(path))
    assert Prompt.objects.count() == 0


DUPLICATED = [{"text": "same prompt"}, {"text": "same prompt"}]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "target, message",
    [
        ("p.jsonl.removed.jsonl/", r"p\.jsonl\.removed\.jsonl: is a folder"),  # the default
        ("review/", r"review: is a folder"),
        ("p.jsonl", r"p\.jsonl: is the input file"),
        ("notes.txt/removed.jsonl", r"notes\.txt is a file, not a folder"),
    ],
)
def test_a_removed_rows_target_that_cannot_be_written_is_refused_first(
    project, tmp_path, target, message
):
    path = write_jsonl(tmp_path / "p.jsonl", DUPLICATED)
    before = path.read_bytes()
    (tmp_path / "notes.txt").write_text("mine")
    args = []
    if target.endswith("/"):
        (tmp_path / target).mkdir()
    if target != "p.jsonl.removed.jsonl/":
        args = ["--removed-out", str(tmp_path / target)]
    with pytest.raises(CommandError, match=message):
        call_command("import_prompts", "demo", str(path), *args, stdout=io.StringIO())
    assert Prompt.objects.count() == 0
    assert path.read_bytes() == before
    assert not list(tmp_path.rglob(".*.tmp"))


@pytest.mark.django_db
def test_a_read_only_folder_is_refused_only_when_rows_are_removed(project, tmp_path, monkeypatch):
    from annotation.services import promptprep

    monkeypatch.setattr(promptprep.os, "access", lambda *args: False)
    clean = write_jsonl(tmp_path / "clean.jsonl", [{"text": "one prompt"}])
    call_command("import_prompts", "demo", str(clean), stdout=io.StringIO())
    path = write_jsonl(tmp_path / "p.jsonl", DUPLICATED)
    with pytest.raises(CommandError, match=r"p\.jsonl\.removed\.jsonl: cannot write the removed"):
        call_command("import_prompts", "demo", str(path))
    assert Prompt.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("step", ["stage", "move"])
def test_removed_rows_that_cannot_be_written_leave_nothing_imported(
    project, tmp_path, monkeypatch, step
):
    import errno

    from annotation.services import promptprep

    def fail(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    if step == "stage":
        monkeypatch.setattr(promptprep.tempfile, "mkstemp", fail)
    else:  # the last step before the import commits
        monkeypatch.setattr(promptprep.os, "replace", fail)
    path = write_jsonl(tmp_path / "p.jsonl", DUPLICATED)
    with pytest.raises(CommandError, match=r"cannot write the removed rows \(Read-only file"):
        call_command("import_prompts", "demo", str(path), stdout=io.StringIO())
    assert Prompt.objects.count() == 0
    assert not list(tmp_path.glob(".*.tmp"))
    assert not (tmp_path / "p.jsonl.removed.jsonl").exists()
    monkeypatch.undo()
    stdout = io.StringIO()
    call_command("import_prompts", "demo", str(path), stdout=stdout)
    assert "created 1, unchanged 0" in stdout.getvalue()  # not "unchanged": nothing was kept
    assert (tmp_path / "p.jsonl.removed.jsonl").exists()


def test_band_bloom_has_no_false_negatives_and_a_fixed_size():
    from annotation.rules.promptprep import BandBloom

    bloom = BandBloom(bands=3, expected=1000)
    size = bloom.nbytes
    rows = [[f"{i}-{b}".encode() for b in range(3)] for i in range(1000)]
    for bands in rows:
        bloom.add(bands)
    assert all(bloom.contains_any(bands) for bands in rows)
    others = [[f"other{i}-{b}".encode() for b in range(3)] for i in range(2000)]
    assert sum(bloom.contains_any(bands) for bands in others) <= 2  # fp 1e-5 per band
    assert bloom.nbytes == size and size < 1000 * 3 * 40  # ~30 bytes a row per band
