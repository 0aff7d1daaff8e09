"""Prompt and candidate imports: formats, every kind of bad line, idempotency, all or nothing."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from annotation.errors import ImportFileError, ServiceValidationError
from annotation.models import Candidate, Prompt
from annotation.services import imports
from annotation.services.imports import candidates_import_file, parse_prompt_file

pytestmark = pytest.mark.django_db


def prompts_import_file(*, project, path):
    """What the import_prompts command does: validate the whole file, then import it."""
    records = parse_prompt_file(path)
    return imports.prompts_import_file(
        project=project, path=path, records=records, source=path.name
    )


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_text_and_messages(project, tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"external_id": "a", "text": "What is 2+2?", "metadata": {"kind": "math"}},
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello"},
                    {"role": "user", "content": "Capital of France?"},
                ]
            },
        ],
    )
    result = prompts_import_file(project=project, path=path)
    assert (result.created, result.unchanged) == (2, 0)
    text_prompt = Prompt.objects.get(external_id="a")
    assert text_prompt.messages == [{"role": "user", "content": "What is 2+2?"}]
    assert text_prompt.is_chat is False and text_prompt.as_model_input() == "What is 2+2?"
    assert text_prompt.metadata == {"kind": "math"} and text_prompt.source == "p.jsonl"
    chat = Prompt.objects.get(external_id__isnull=True)
    assert chat.is_chat and len(chat.as_model_input()) == 4


def test_reimport_creates_nothing_new(project, tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"external_id": "a", "text": "x"}, {"text": "no id"}])
    prompts_import_file(project=project, path=path)
    again = prompts_import_file(project=project, path=path)
    assert (again.created, again.unchanged) == (0, 2)
    assert Prompt.objects.count() == 2


def test_csv_with_text_column_and_extra_columns_as_metadata(project, tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(
        'external_id,text,topic\n1,"Hello, world",greeting\n2,"Line one\nline two",misc\n'
    )
    result = prompts_import_file(project=project, path=path)
    assert result.created == 2
    assert Prompt.objects.get(external_id="1").metadata == {"topic": "greeting"}
    assert Prompt.objects.get(external_id="2").text == "Line one\nline two"


def test_csv_without_text_column(project, tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("prompt\nhello\n")
    with pytest.raises(ImportFileError, match=r"p\.csv:1: a CSV file needs a 'text' column"):
        prompts_import_file(project=project, path=path)


def test_a_byte_order_mark_opening_the_file_is_not_part_of_it(project, tmp_path):
    # Excel's "CSV UTF-8" and Windows editors write one; it used to hide the 'text' header.
    bom = "\ufeff"
    csv_path = tmp_path / "p.csv"
    csv_path.write_text(bom + "external_id,text\n1,Hello\n", encoding="utf-8")
    jsonl_path = tmp_path / "p.jsonl"
    jsonl_path.write_text(bom + json.dumps({"external_id": "2", "text": "Hi"}) + "\n")
    assert prompts_import_file(project=project, path=csv_path).created == 1
    assert prompts_import_file(project=project, path=jsonl_path).created == 1
    assert sorted(Prompt.objects.values_list("external_id", "messages__0__content")) == [
        ("1", "Hello"),
        ("2", "Hi"),
    ]
    # Only at the very start: further down it is a character of the text like any other.
    later = tmp_path / "later.jsonl"
    later.write_text('{"text": "a"}\n' + bom + '{"text": "b"}\n')
    with pytest.raises(ImportFileError, match=r"later\.jsonl:2: invalid JSON"):
        prompts_import_file(project=project, path=later)


HUGE = "9" * 5000  # past Python's 4300-digit limit for reading an int


@pytest.mark.parametrize("value", [str(2**63), "99999999999999999999999", "0", "-1", HUGE])
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_prompt_id_out_of_the_database_range_is_a_line_error(project, tmp_path, value, suffix):
    path = tmp_path / f"c{suffix}"
    if suffix == ".csv":
        path.write_text(f"prompt_id,text\n{value},t\n")
    else:
        path.write_text(f'{{"prompt_id": {value}, "text": "t"}}\n')
    line = 2 if suffix == ".csv" else 1
    reason = (
        "invalid JSON \\(a number of 5000 digits is too long\\)"
        if value == HUGE and suffix == ".jsonl"
        else "'prompt_id' must be an id from 1 to 9223372036854775807"
        if value != "-1" or suffix == ".jsonl"
        else "'prompt_id' must be an integer"  # a CSV cell "-1" is no id's digits
    )
    with pytest.raises(ImportFileError, match=rf"c\{suffix}:{line}: {reason}$"):
        candidates_import_file(project=project, path=path)
    with pytest.raises(CommandError, match="must be|too long"):
        call_command("import_candidates", "demo", str(path))
    assert Candidate.objects.count() == 0


def test_a_5000_digit_external_id_is_a_plain_line_error(project, tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl", ['{"text": "fine"}', f'{{"external_id": {HUGE}, "text": "t"}}']
    )
    with pytest.raises(ImportFileError) as caught:
        prompts_import_file(project=project, path=path)
    assert caught.value.message == "invalid JSON (a number of 5000 digits is too long)"
    assert caught.value.line == 2
    assert Prompt.objects.count() == 0


def test_candidates_csv_has_the_jsonl_columns(project, tmp_path):
    prompts_import_file(
        project=project, path=write_jsonl(tmp_path / "p.jsonl", [{"external_id": "a", "text": "q"}])
    )
    prompt = Prompt.objects.get()
    path = tmp_path / "c.csv"
    path.write_text(
        "prompt_external_id,prompt_id,text,model,params\n"
        'a,,"one, with a comma",m1,"{""temperature"": 0.7}"\n'
        f",{prompt.pk},two,,\n"
    )
    assert candidates_import_file(project=project, path=path).created == 2
    one, two = Candidate.objects.order_by("text")
    assert (one.text, one.model_name, one.generation_params) == (
        "one, with a comma",
        "m1",
        {"temperature": 0.7},
    )
    assert two.text == "two" and two.prompt_id == prompt.pk
    bad_id = tmp_path / "bad.csv"
    bad_id.write_text("prompt_id,text\n1,fine\nx,three\n")
    with pytest.raises(ImportFileError, match=r"bad\.csv:3: 'prompt_id' must be an integer"):
        candidates_import_file(project=project, path=bad_id)
    no_ref = tmp_path / "noref.csv"
    no_ref.write_text("text\nthree\n")
    with pytest.raises(
        ImportFileError, match=r"noref\.csv:1: .*'prompt_external_id' or 'prompt_id'"
    ):
        candidates_import_file(project=project, path=no_ref)
    assert Candidate.objects.count() == 2


@pytest.mark.ml
def test_datasets_folder(project, tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["a", "b"], "external_id": ["1", "2"]}).save_to_disk(
        tmp_path / "ds"
    )
    assert prompts_import_file(project=project, path=tmp_path / "ds").created == 2


BAD_LINES = [
    ("{not json", "invalid JSON"),
    ({"external_id": "z"}, "missing 'text'"),
    ({"text": "   "}, "'text' must be non-empty"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "wrong role order"),
    (
        {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
        "wrong role order",
    ),
    ({"messages": [{"role": "user", "content": ""}]}, "content must be non-empty"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "role must be one of"),
    ({"text": "x", "metadata": [1]}, "'metadata' must be an object"),
    ({"external_id": "a", "text": "dup"}, "duplicate external_id 'a' (first on line 1)"),
    ('{"text": "nul \\u0000 inside"}', "contains a NUL character"),
    ('{"text": "lone \\ud800 surrogate"}', "not valid Unicode"),
]


@pytest.mark.parametrize("bad,message", BAD_LINES)
def test_a_bad_line_fails_the_whole_file_with_its_line_number(project, tmp_path, bad, message):
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"external_id": "a", "text": "fine"}, {"text": "also fine"}, bad]
    )
    with pytest.raises(ImportFileError) as info:
        prompts_import_file(project=project, path=path)
    assert str(info.value).startswith(f"{path}:3: ")
    assert message in str(info.value)
    assert Prompt.objects.count() == 0


def test_existing_external_id_with_other_content_is_refused(project, tmp_path):
    prompts_import_file(
        project=project, path=write_jsonl(tmp_path / "a.jsonl", [{"external_id": "a", "text": "x"}])
    )
    path = write_jsonl(
        tmp_path / "b.jsonl",
        [{"external_id": "new", "text": "y"}, {"external_id": "a", "text": "changed"}],
    )
    with pytest.raises(ImportFileError, match=r"b\.jsonl:2: external_id 'a' already exists"):
        prompts_import_file(project=project, path=path)
    with pytest.raises(CommandError, match=r"b\.jsonl:2: external_id 'a' already exists"):
        call_command("import_prompts", "demo", str(path))
    assert Prompt.objects.count() == 1


def test_candidate_prompt_ids_match_as_the_prompt_file_wrote_them(project, tmp_path):
    # Prompt external ids are stored stripped; a candidates file copying " q1 " verbatim
    # names the same prompt.
    prompts_import_file(
        project=project,
        path=write_jsonl(tmp_path / "p.jsonl", [{"external_id": " q1 ", "text": "Hi?"}]),
    )
    path = write_jsonl(tmp_path / "c.jsonl", [{"prompt_external_id": " q1 ", "text": "Hello."}])
    assert candidates_import_file(project=project, path=path).created == 1
    assert Candidate.objects.get().prompt.external_id == "q1"


def test_import_prompts_command(project, tmp_path, capsys):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": "a"}, {"text": "b"}])
    call_command("import_prompts", "demo", str(path))
    assert "created 2, unchanged 0" in capsys.readouterr().out
    with pytest.raises(CommandError, match="No project with slug 'nope'"):
        call_command("import_prompts", "nope", str(path))
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "c"}, "[1,"])
    with pytest.raises(CommandError, match=r"bad\.jsonl:2: invalid JSON"):
        call_command("import_prompts", "demo", str(bad))
    with pytest.raises(CommandError, match="file not found"):
        call_command("import_prompts", "demo", str(tmp_path / "missing.jsonl"))
    assert Prompt.objects.count() == 2


def test_candidates_import_all_or_nothing(project, tmp_path):
    prompts_import_file(
        project=project, path=write_jsonl(tmp_path / "p.jsonl", [{"external_id": "a", "text": "q"}])
    )
    prompt = Prompt.objects.get()
    good = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"prompt_external_id": "a", "text": "one", "model": "m1"},
            {"prompt_id": prompt.pk, "text": "two", "model": "m2"},
            {"prompt_external_id": "a", "text": "one", "model": "m1"},  # same text: unchanged
        ],
    )
    result = candidates_import_file(project=project, path=good)
    assert (result.created, result.unchanged) == (2, 1)
    bad = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"prompt_external_id": "a", "text": "three"},
            {"prompt_external_id": "missing", "text": "x"},
        ],
    )
    with pytest.raises(
        ImportFileError, match=r"bad\.jsonl:2: .*no prompt with prompt_external_id 'missing'"
    ):
        candidates_import_file(project=project, path=bad)
    # Both references given: fine when they name the same prompt, refused when not.
    both = [{"prompt_external_id": "a", "prompt_id": prompt.pk, "text": "four"}]
    assert (
        candidates_import_file(
            project=project, path=write_jsonl(tmp_path / "both.jsonl", both)
        ).created
        == 1
    )
    clash = [
        {"prompt_external_id": "a", "text": "five"},
        {"prompt_external_id": "a", "prompt_id": prompt.pk + 1, "text": "six"},
    ]
    with pytest.raises(
        ImportFileError,
        match=rf"clash\.jsonl:2: .*'a' is prompt {prompt.pk}, but prompt_id says {prompt.pk + 1}",
    ):
        candidates_import_file(project=project, path=write_jsonl(tmp_path / "clash.jsonl", clash))
    assert not Candidate.objects.filter(text="five").exists()
    no_text = write_jsonl(tmp_path / "nt.jsonl", [{"prompt_external_id": "a"}])
    with pytest.raises(ImportFileError, match=r"nt\.jsonl:1: 'text' must be non-empty"):
        candidates_import_file(project=project, path=no_text)
    assert Candidate.objects.count() == 3


def test_bulk_import_is_fast_enough_for_many_prompts(
    project, tmp_path, django_assert_max_num_queries
):
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"external_id": str(i), "text": f"prompt {i}"} for i in range(5000)]
    )
    from annotation.services.imports import parse_prompt_file, prompts_import

    records = parse_prompt_file(path)
    # Bulk writes: batches of rows (SQLite caps variables per statement), never one per prompt.
    with django_assert_max_num_queries(100):
        result = prompts_import(project=project, records=records)
    assert result.created == 5000


# --- bytes and values the database cannot hold: `file:line: reason`, nothing written ----------

DEEP = "[" * 100_000 + "]" * 100_000  # RecursionError inside json.loads
NESTED = "[" * 40 + "]" * 40  # parses, but deeper than MAX_DEPTH

# (a line as raw bytes, the reason named). Each becomes line 2 of a prompts and a candidates file.
BAD_BYTES = [
    (b'{"text": "caf\xe9"}', "not valid UTF-8 (byte 0xe9 at column 14)"),
    (b'{"text": "ok", "metadata": {"k": "a\\u0000b"}}', "'metadata'['k'] contains a NUL"),
    (b'{"text": "ok", "metadata": {"k\\u0000": 1}}', "key 'metadata'["),
    (b'{"text": "ok", "metadata": {"k": ["\\udc80"]}}', "not valid Unicode (lone surrogate)"),
    (b'{"text": "ok", "external_id": "x\\ud800"}', "not valid Unicode (lone surrogate)"),
    (('{"text": "ok", "metadata": {"k": ' + DEEP + "}}").encode(), "nested deeper than 32"),
    (('{"text": "ok", "metadata": {"k": ' + NESTED + "}}").encode(), "nested deeper than 32"),
    (b'{"text": "nul\x00"}', "invalid JSON"),
    # Not JSON, though Python's json reads them; SQLite refused them as "changed during the
    # import; run it again", PostgreSQL's jsonb with a DataError.
    (b'{"text": "ok", "metadata": {"score": NaN}}', "invalid JSON (NaN is not a JSON number)"),
    (b'{"text": "ok", "metadata": {"k": -Infinity}}', "-Infinity is not a JSON number"),
    (b'{"text": "ok", "metadata": {"k": 1e999}}', "1e999 is out of range for a number"),
]


def _as_candidate(line: bytes) -> bytes:
    return line.replace(b'{"text"', b'{"prompt_external_id": "a", "text"', 1).replace(
        b'"external_id": "x', b'"model": "x'
    )


@pytest.mark.parametrize(("line", "reason"), BAD_BYTES)
def test_import_prompts_command_names_file_line_and_reason(project, tmp_path, line, reason):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"text": "fine"}\n' + line + b"\n")
    with pytest.raises(CommandError) as info:
        call_command("import_prompts", "demo", str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:2: ") and reason in message, message
    assert "\n" not in message and len(message) < 300
    assert Prompt.objects.count() == 0


@pytest.mark.parametrize(("line", "reason"), BAD_BYTES)
def test_import_candidates_command_names_file_line_and_reason(project, tmp_path, line, reason):
    prompts_import_file(
        project=project, path=write_jsonl(tmp_path / "p.jsonl", [{"external_id": "a", "text": "q"}])
    )
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"prompt_external_id": "a", "text": "fine"}\n' + _as_candidate(line) + b"\n")
    with pytest.raises(CommandError) as info:
        call_command("import_candidates", "demo", str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:2: ") and reason.split(" (byte")[0] in message, message
    assert "\n" not in message
    assert Candidate.objects.count() == 0


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"caf\xe9,", "not valid UTF-8 (byte 0xe9 at column 4)"),
        (b'ok,"{""k"": ""a\\u0000""}"', "'metadata'['k'] contains a NUL"),
        (b'ok,"{""k"": ""\\ud800""}"', "lone surrogate"),
        (b'ok,"' + b"[" * 20_000 + b"]" * 20_000 + b'"', "the 'metadata' column must hold JSON"),
        (b'ok,"{""k"": ' + b"[" * 40 + b"]" * 40 + b'}"', "nested deeper than 32"),
        (b'"' + b"x" * 140_000 + b'",', "invalid CSV (field larger than field limit"),
        (b'ok,"[1]"', "must hold a JSON object"),
        (b"nul\x00,", "contains a NUL"),
    ],
)
def test_csv_import_names_file_line_and_reason(project, tmp_path, line, reason):
    path = tmp_path / "p.csv"
    path.write_bytes(b"text,metadata\nfine,\n" + line + b"\n")
    with pytest.raises(CommandError) as info:
        call_command("import_prompts", "demo", str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:3: ") and reason in message, message
    assert Prompt.objects.count() == 0


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        # An unclosed quote swallowed the rows after it into one prompt.
        (
            'first row,r1\n"Say hi to Bob,r2\nthird row,r3\n',
            r"p\.csv:3: invalid CSV \(unexpected end of data\) in the row that begins on this "
            r"line: is a quote left open\?",
        ),
        ('"open,r1\nsecond,r2\nthird "quoted" cell,r3\n', r"p\.csv:2: invalid CSV \(','"),
        # Cells past the header's were dropped.
        ("first row,r1\nsecond row,r2,extra,more\n", r"p\.csv:3: 4 cells, the header has 2$"),
    ],
)
def test_csv_rows_the_header_does_not_describe_are_refused(project, tmp_path, rows, message):
    path = tmp_path / "p.csv"
    path.write_text("text,external_id\n" + rows)
    with pytest.raises(ImportFileError, match=message):
        prompts_import_file(project=project, path=path)
    assert Prompt.objects.count() == 0
    # A quoted cell may hold a line break, a comma and quotes; a short row is fine.
    path.write_text('text,external_id\n"two\nlines, ""quoted""",r1\nshort row\n')
    assert prompts_import_file(project=project, path=path).created == 2
    assert Prompt.objects.get(external_id="r1").messages[0]["content"] == 'two\nlines, "quoted"'


def test_jsonl_reading_streams_line_by_line(tmp_path):
    # A 12 MB file is read a line at a time: the reader's peak memory is a few lines, not the
    # file (the 114 MB import peaked at 657 MB). Only what the caller keeps stays in memory.
    import tracemalloc

    from annotation.datafiles.jsonl import iter_jsonl

    path = tmp_path / "big.jsonl"
    line = json.dumps({"text": "x" * 1000, "metadata": {"n": 1}}).encode() + b"\n"
    path.write_bytes(line * 12_000)
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_jsonl(path, storable=True))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 12_000
    assert peak < 1_000_000, peak


def test_a_refusal_after_a_written_batch_still_writes_nothing(project, tmp_path, monkeypatch):
    # Prompts are written a batch at a time inside one transaction; a conflict found after
    # the first batch rolls every batch back.
    monkeypatch.setattr(imports, "BULK_BATCH", 2)
    prompts_import_file(
        project=project, path=write_jsonl(tmp_path / "a.jsonl", [{"external_id": "z", "text": "x"}])
    )
    rows = [{"external_id": f"n{i}", "text": f"t{i}"} for i in range(5)]
    rows.append({"external_id": "z", "text": "changed"})
    with pytest.raises(ServiceValidationError, match=r"b\.jsonl:6: external_id 'z' already exists"):
        prompts_import_file(project=project, path=write_jsonl(tmp_path / "b.jsonl", rows))
    assert Prompt.objects.count() == 1


def test_a_non_finite_number_from_a_datasets_folder_is_named():
    from annotation.datafiles.jsonl import storable_problem

    record = {"text": "ok", "metadata": {"scores": [0.5, float("nan")]}}
    assert storable_problem(record) == "'metadata'['scores'][1] is not a finite number"
    assert storable_problem({"text": "ok", "metadata": {"score": 0.5}}) is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["prompts", "candidates"])
def test_a_failure_in_a_later_batch_keeps_nothing_of_the_earlier_ones(
    project, tmp_path, monkeypatch, kind
):
    # A concurrent import wins a unique race in the second batch: the first must not stay.
    from django.db import IntegrityError

    rows = [{"external_id": f"p{i}", "text": f"q{i}"} for i in range(imports.BULK_BATCH + 5)]
    if kind == "candidates":
        prompts_import_file(project=project, path=write_jsonl(tmp_path / "p.jsonl", rows[:3]))
        rows = [
            {"prompt_external_id": f"p{i % 3}", "text": f"answer {i}"}
            for i in range(imports.BULK_BATCH + 5)
        ]
    before = (Prompt.objects.count(), Candidate.objects.count())
    real = imports._bulk_create
    calls = []

    def second_batch_races(model, objects, what, result):
        calls.append(len(objects))
        if len(calls) == 2:
            raise ServiceValidationError(
                f"{what} changed during the import; run it again."
            ) from IntegrityError()
        real(model, objects, what, result)

    monkeypatch.setattr(imports, "_bulk_create", second_batch_races)
    path = write_jsonl(tmp_path / f"{kind}.jsonl", rows)
    with pytest.raises(ImportFileError, match="changed during the import"):
        if kind == "prompts":
            prompts_import_file(project=project, path=path)
        else:
            candidates_import_file(project=project, path=path)
    assert len(calls) == 2 and calls[0] == imports.BULK_BATCH
    assert (Prompt.objects.count(), Candidate.objects.count()) == before


def test_a_bad_candidate_line_is_found_before_anything_is_stored(project, tmp_path, monkeypatch):
    from annotation.services import imports

    prompts_import_file(
        project=project, path=write_jsonl(tmp_path / "p.jsonl", [{"external_id": "a", "text": "q"}])
    )
    rows = [
        {"prompt_external_id": "a", "text": f"answer {i}"} for i in range(imports.BULK_BATCH + 5)
    ]
    rows.append({"prompt_external_id": "a", "text": ""})  # the last line is bad
    stored = []
    monkeypatch.setattr(imports, "_bulk_create", lambda *args: stored.append(args))
    with pytest.raises(ImportFileError, match=rf"c\.jsonl:{len(rows)}: 'text' must be non-empty"):
        candidates_import_file(project=project, path=write_jsonl(tmp_path / "c.jsonl", rows))
    assert stored == []  # the shape of every line was checked first, outside the transaction
    # A prompt_id that is no integer beside a prompt_external_id is ignored, as it was.
    odd = [{"prompt_external_id": "a", "prompt_id": "12", "text": "fine"}]
    monkeypatch.undo()
    assert (
        candidates_import_file(project=project, path=write_jsonl(tmp_path / "o.jsonl", odd)).created
        == 1
    )


INTERRUPTED = "interrupted: nothing was imported; run the same command again"


def _interrupt_on_second_call(monkeypatch, target: str):
    """Let `target` run once (a batch is stored), then raise KeyboardInterrupt (Ctrl-C)."""
    module, name = target.rsplit(".", 1)
    module = __import__(module, fromlist=[name])
    original, calls = getattr(module, name), []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, interrupted)
    monkeypatch.setattr(imports, "BULK_BATCH", 1)  # one row a batch: the first is stored


def test_ctrl_c_during_a_prompt_import_is_one_line_and_imports_nothing(
    project, tmp_path, monkeypatch
):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": f"prompt {i}"} for i in range(3)])
    _interrupt_on_second_call(monkeypatch, "annotation.services.imports._bulk_create")
    with pytest.raises(CommandError) as info:
        call_command("import_prompts", "demo", str(path), stdout=io.StringIO())
    assert (str(info.value), info.value.returncode) == (INTERRUPTED, 130)
    assert Prompt.objects.count() == 0


def test_ctrl_c_during_a_candidate_import_rolls_back_the_batches_stored(
    project, tmp_path, monkeypatch
):
    prompts_import_file(
        project=project, path=write_jsonl(tmp_path / "p.jsonl", [{"external_id": "a", "text": "q"}])
    )
    rows = [{"prompt_external_id": "a", "text": f"answer {i}"} for i in range(3)]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    _interrupt_on_second_call(monkeypatch, "annotation.services.imports._candidates_store")
    with pytest.raises(CommandError) as info:
        call_command("import_candidates", "demo", str(path), stdout=io.StringIO())
    assert (str(info.value), info.value.returncode) == (INTERRUPTED, 130)
    assert Candidate.objects.count() == 0  # the first batch went with the transaction


def test_ctrl_c_after_the_import_was_stored_says_so(project, tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": "one"}])

    class Stdout(io.StringIO):
        def write(self, text):
            if text.startswith("created"):
                raise KeyboardInterrupt
            return super().write(text)

    with pytest.raises(CommandError, match="interrupted after the import was stored") as info:
        call_command("import_prompts", "demo", str(path), stdout=Stdout())
    assert info.value.returncode == 130 and Prompt.objects.count() == 1
