"""A prompt's forms (SPEC section 4): stored as chat messages, handed to models as input.

Django-free, so the labeling app, the simulated labelers and the training code share one rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ModelInput = str | list[dict[str, Any]]


def prompt_model_input(messages: Sequence[dict[str, Any]], *, is_chat: bool) -> ModelInput:
    """The prompt as policies, rewards and judges get it: plain text, or the whole chat.

    A prompt imported as plain text is stored as one user message and handed over as its
    text; a chat (imported as messages, even a one-turn one) is handed over whole.
    """
    return list(messages) if is_chat else messages[0]["content"]
