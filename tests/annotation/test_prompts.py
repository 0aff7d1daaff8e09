"""The prompt as models and judges get it (pure): text unless imported as a chat."""

from annotation.prompts import prompt_model_input


def test_prompt_model_input_follows_how_the_prompt_was_imported():
    one_user_turn = [{"role": "user", "content": "Hi?"}]
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    assert prompt_model_input(one_user_turn, is_chat=False) == "Hi?"
    # A one-turn chat is still a chat: the judge gets the message list, not its text.
    assert prompt_model_input(one_user_turn, is_chat=True) == one_user_turn
    assert prompt_model_input(chat, is_chat=True) == chat
