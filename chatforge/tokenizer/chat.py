"""Conversations ⇄ tokens in the ChatML-style format of DESIGN.md §5, with the loss mask.

    <|endoftext|><|im_start|>system<|im_sep|>...<|im_end|><|im_start|>user<|im_sep|>...<|im_end|>
    <|im_start|>assistant<|im_sep|>...<|im_end|>

Special tokens come only from this structure: message text goes through `encode` (ordinary text),
so a user typing "<|im_start|>" gets plain bytes. The mask is 1 on what the model should learn to
produce: assistant content and the <|im_end|> that closes it."""

from chatforge.tokenizer.bpe import Tokenizer

ROLES = ("system", "user", "assistant")


def _check(messages: list[dict]) -> None:
    if not messages:
        raise ValueError("a conversation needs at least one message")
    for i, m in enumerate(messages):
        if m.get("role") not in ROLES:
            raise ValueError(f"message {i}: role must be one of {', '.join(ROLES)}, got {m.get('role')!r}")
        if not isinstance(m.get("content"), str):
            raise ValueError(f"message {i}: content must be a string")


def render(tok: Tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Whole conversation → (ids, mask), mask[i] = 1 where ids[i] is a trained target."""
    _check(messages)
    start, sep, end = tok.special("<|im_start|>"), tok.special("<|im_sep|>"), tok.special("<|im_end|>")
    ids, mask = [tok.bos_id], [0]
    for m in messages:
        head = [start, *tok.encode(m["role"]), sep]
        body = tok.encode(m["content"]) + [end]
        trained = 1 if m["role"] == "assistant" else 0
        ids += head + body
        mask += [0] * len(head) + [trained] * len(body)
    return ids, mask


def render_prompt(tok: Tokenizer, messages: list[dict]) -> list[int]:
    """Conversation so far + the opening of the assistant's turn, ready for generation."""
    ids, _ = render(tok, messages)
    return ids + [tok.special("<|im_start|>"), *tok.encode("assistant"), tok.special("<|im_sep|>")]
