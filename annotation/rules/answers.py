"""Text a labeler writes as an answer: a demonstration, or the rewrite of a best candidate.

Pure rules, no Django: `demonstration_clean` checks a submission on a `demonstration` project
(the written answer; `submission_clean(ranked=False)` checks the rest), `edited_text_clean` the optional `edited_text` of a
ranking submission (only where the project has `allow_edit`). Both return the text stripped of
surrounding whitespace and with LF line breaks, and raise ServiceValidationError naming the field otherwise.
"""

from __future__ import annotations

from typing import Any

from annotation.errors import ServiceValidationError


def _text_errors(field: str, value: Any, *, max_length: int, required: bool) -> list[str]:
    if not isinstance(value, str):
        return [f"{field} must be text."]
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL; reject it here rather than fail with a 500.
        return [f"{field} must not contain NUL characters."]
    if len(value) > max_length:
        return [f"{field} is longer than {max_length} characters ({len(value)})."]
    if required and not value.strip():
        return [f"{field} must not be empty: write the answer."]
    return []


def _normalized(text: str) -> str:
    # HTML forms send line breaks as CRLF: training data gets plain LF, as an API client sends.
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def demonstration_clean(*, demonstration: Any, max_length: int) -> str:
    """The answer written on a demonstration project, stripped; empty is an error."""
    messages = _text_errors("demonstration", demonstration, max_length=max_length, required=True)
    if messages:
        raise ServiceValidationError(
            f"Invalid submission: {messages[0]}", {"demonstration": messages}
        )
    return _normalized(demonstration)


def edited_text_clean(*, edited_text: Any, allow_edit: bool, max_length: int) -> str:
    """The optional rewrite of the best answer on a ranking project, stripped ('' = none)."""
    if edited_text is None or edited_text == "":
        return ""
    if not allow_edit:
        message = "This project does not take edited answers (allow_edit is off)."
        raise ServiceValidationError(f"Invalid submission: {message}", {"edited_text": [message]})
    if messages := _text_errors("edited_text", edited_text, max_length=max_length, required=False):
        raise ServiceValidationError(
            f"Invalid submission: {messages[0]}", {"edited_text": messages}
        )
    return _normalized(edited_text)
