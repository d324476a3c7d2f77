"""Conversations ⇄ tokens in the ChatML-style format of docs/design.md, with the loss mask.

    <|endoftext|><|im_start|>system<|im_sep|>...<|im_end|><|im_start|>user<|im_sep|>...<|im_end|>
    <|im_start|>assistant<|im_sep|>...<|im_end|>

A message is OpenAI-style {"role", "content"}; content is a string, or for the assistant a list of
parts {"type": T, "text": str} with T one of:
    text    plain answer text                            trained
    think   reasoning, in <think> ... </think>           trained
    python  a tool call, <|python_start|> ... <|python_end|>   trained
    search  a tool call, <|search_start|> ... <|search_end|>   trained
    output  a tool's result, <|output_start|> ... <|output_end|>   not trained: the runtime pastes it in
An OpenAI-style {"role": "tool", "content": "..."} message (a client's own tool result) follows an
assistant message that ends in a python or search call. It renders as <|output_start|> ... <|output_end|>
inside that assistant turn, which stays open: the calling message gets no <|im_end|>, and the assistant
message after the tool message continues the turn without a new header. That is the token sequence
the engine makes when it runs the tool itself, so both look the same to the model (`parse` returns
the inline form, an output part).
Special tokens come only from this structure: every text goes through `encode` (ordinary text), so
a user typing "<|im_start|>" gets plain bytes. The mask is 1 on what the model must learn to
produce: assistant content, tool calls and the <|im_end|> that closes the turn.
"""

from chatforge.tokenizer.bpe import Tokenizer

ROLES = ("system", "user", "assistant", "tool")
# part type -> (opening special token or None, closing special token or None, trained)
PARTS = {
    "text": (None, None, True),
    "think": ("<think>", "</think>", True),
    "python": ("<|python_start|>", "<|python_end|>", True),
    "search": ("<|search_start|>", "<|search_end|>", True),
    "output": ("<|output_start|>", "<|output_end|>", False),
}
CALLS = ("python", "search")  # parts whose result a tool message can hold


def _parts(i: int, m: dict) -> list[dict]:
    content = m.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise ValueError(f"message {i}: content must be a string or a list of parts")
    for p in content:
        if not isinstance(p, dict) or p.get("type") not in PARTS or not isinstance(p.get("text"), str):
            raise ValueError(f"message {i}: each part needs a type in {', '.join(PARTS)} and a string text")
        if p["type"] != "text" and m["role"] != "assistant":
            raise ValueError(f"message {i}: only assistant messages can hold {p['type']!r} parts")
    return content


def _ends_in_call(m: dict | None) -> bool:
    """Whether `m` (already rendered, so well-formed) is an assistant message whose last part is a tool call."""
    return m is not None and m["role"] == "assistant" and isinstance(m["content"], list) and bool(m["content"]) \
        and m["content"][-1]["type"] in CALLS


def render(tok: Tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Whole conversation → (ids, mask), mask[i] = 1 where ids[i] is a trained target. A conversation that
    ends in a tool message ends inside the open assistant turn."""
    if not messages:
        raise ValueError("a conversation needs at least one message")
    start, sep, end = tok.special("<|im_start|>"), tok.special("<|im_sep|>"), tok.special("<|im_end|>")
    ids, mask = [tok.bos_id], [0]
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in ROLES:
            raise ValueError(f"message {i}: role must be one of {', '.join(ROLES)}, got {role!r}")
        prev = messages[i - 1] if i else None
        nxt = messages[i + 1] if i + 1 < len(messages) else None
        if role == "tool":
            if not _ends_in_call(prev):
                raise ValueError(f"message {i}: a tool message must follow an assistant message that ends in a "
                                 f"{' or '.join(CALLS)} call")
            body = [tok.special("<|output_start|>"), *tok.encode("".join(p["text"] for p in _parts(i, m))),
                    tok.special("<|output_end|>")]
            ids += body
            mask += [0] * len(body)
            continue
        if prev and prev.get("role") == "tool":
            if role != "assistant":
                raise ValueError(f"message {i}: after a tool message the assistant continues its turn, got {role!r}")
        else:
            head = [start, *tok.encode(role), sep]
            ids += head
            mask += [0] * len(head)
        assistant = role == "assistant"
        for p in _parts(i, m):
            open_, close, trained = PARTS[p["type"]]
            body = ([tok.special(open_)] if open_ else []) + tok.encode(p["text"]) + \
                ([tok.special(close)] if close else [])
            ids += body
            mask += [int(assistant and trained)] * len(body)
        if not (nxt and nxt.get("role") == "tool"):  # a tool result continues this turn
            ids.append(end)
            mask.append(int(assistant))
    return ids, mask


def assistant_header(tok: Tokenizer) -> list[int]:
    return [tok.special("<|im_start|>"), *tok.encode("assistant"), tok.special("<|im_sep|>")]


def render_prompt(tok: Tokenizer, messages: list[dict]) -> list[int]:
    """Conversation so far + the opening of the assistant's turn, ready for generation; after a tool message
    the assistant's turn is already open."""
    ids, _ = render(tok, messages)
    return ids if messages[-1].get("role") == "tool" else ids + assistant_header(tok)


def parse(tok: Tokenizer, ids: list[int]) -> list[dict]:
    """Tokens → messages: the inverse of `render` (content is a string when it is all text)."""
    start, sep, end = tok.special("<|im_start|>"), tok.special("<|im_sep|>"), tok.special("<|im_end|>")
    opens = {tok.special(o): t for t, (o, _, _) in PARTS.items() if o}
    closes = {tok.special(c): t for t, (_, c, _) in PARTS.items() if c}
    messages, i = [], 1 if ids and ids[0] == tok.bos_id else 0
    while i < len(ids):
        if ids[i] != start:
            raise ValueError(f"token {i}: expected <|im_start|>, got {tok.decode([ids[i]])!r}")
        j = ids.index(sep, i)
        role = tok.decode(ids[i + 1 : j])
        parts: list[dict] = []
        kind, buf, i = "text", [], j + 1
        while i < len(ids) and ids[i] != end:
            t = ids[i]
            if t in opens:
                if buf:
                    parts.append({"type": "text", "text": tok.decode(buf)})
                kind, buf = opens[t], []
            elif t in closes:
                if closes[t] != kind:
                    raise ValueError(f"token {i}: {tok.decode([t])!r} closes a {kind!r} part")
                parts.append({"type": kind, "text": tok.decode(buf)})
                kind, buf = "text", []
            else:
                buf.append(t)
            i += 1
        if kind != "text":
            raise ValueError(f"unclosed {kind!r} part in the {role} message")
        if buf or not parts:
            parts.append({"type": "text", "text": tok.decode(buf)})
        all_text = all(p["type"] == "text" for p in parts)
        content = "".join(p["text"] for p in parts) if all_text else parts
        messages.append({"role": role, "content": content})
        i += 1  # past <|im_end|>
    return messages


def parse_reply(tok: Tokenizer, ids: list[int]) -> str | list[dict]:
    """The content of the assistant turn generated after render_prompt (`ids` without <|im_end|>):
    a string, or parts when it called a tool."""
    return parse(tok, [*assistant_header(tok), *ids, tok.special("<|im_end|>")])[0]["content"]
