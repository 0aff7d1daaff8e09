"""The shared file helpers: JSON lines reading and export digests (no database)."""

from __future__ import annotations

import hashlib

import pytest

from annotation.datafiles.digest import sha256_path, sha256_tree
from annotation.datafiles.jsonl import JsonlError, iter_jsonl, read_jsonl


def test_jsonl_skips_blank_lines_and_numbers_the_rest(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n  \n[2]\n"three"\n', encoding="utf-8")
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (4, [2]), (5, "three")]
    assert read_jsonl(path) == [{"a": 1}, [2], "three"]


def test_jsonl_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": \n', encoding="utf-8")
    with pytest.raises(JsonlError) as exc:
        read_jsonl(path)
    assert str(exc.value).startswith(f"{path}:2: invalid JSON (")
    assert (exc.value.path, exc.value.line) == (str(path), 2)


def test_sha256_path_is_the_file_bytes_or_the_tree_hash(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.arrow").write_bytes(b"bb")
    (tmp_path / "d" / "sub" / "a.json").write_bytes(b"a")
    (tmp_path / "f.jsonl").write_bytes(b"line\n")
    assert sha256_path(tmp_path / "f.jsonl") == hashlib.sha256(b"line\n").hexdigest()
    lines = (
        f"b.arrow {hashlib.sha256(b'bb').hexdigest()}\n"
        f"sub/a.json {hashlib.sha256(b'a').hexdigest()}\n"
    )
    expected = hashlib.sha256(lines.encode()).hexdigest()
    assert sha256_path(tmp_path / "d") == sha256_tree(tmp_path / "d") == expected
