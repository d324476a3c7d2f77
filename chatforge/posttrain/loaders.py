"""Chat data files as users bring them → chatforge conversations ({"messages": [...]}, tokenizer/chat.py).

Read by extension, then by each record's shape:
  .jsonl     one record a line
  .json      a list of records (or one record)
  .parquet   a record a row (SmolTalk's layout: a `messages` column of [{role, content}])
A record is one of
  OpenAI / TRL conversational   {"messages": [{"role", "content"}, ...]}: assistant `tool_calls` to python or
                                search become chatforge's call parts, `tool` messages their outputs
  TRL prompt-completion         {"prompt": [messages], "completion": [messages]}
  ShareGPT                      {"conversations": [{"from": "human" | "gpt" | "system" | "tool", "value"}, ...]}
A bad record (bad JSON, an unknown role, empty content, a tool output without a call ...) is skipped and counted
with a message naming the file and its line, item or row; it never stops the others.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from chatforge.errors import UserError
from chatforge.tokenizer.chat import CALLS, PARTS

SUFFIXES = (".jsonl", ".json", ".parquet")
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
SHAREGPT_ROLES = {"system": "system", "human": "user", "gpt": "assistant", "tool": "tool"}
KEPT_ERRORS = 5  # messages kept per file: enough to see what is wrong without flooding the log


@dataclass
class LoadStats:
    """What reading one file found: good records, bad ones, and the first KEPT_ERRORS messages."""
    good: int = 0
    bad: int = 0
    errors: list[str] = field(default_factory=list)

    def skip(self, message: str) -> None:
        self.bad += 1
        if len(self.errors) < KEPT_ERRORS:
            self.errors.append(message)


class BadRecord(ValueError):
    pass


def load_conversations(path: Path) -> tuple[list[dict], LoadStats]:
    """Every good record of `path` as {"messages": [...]}. A missing file, an unknown extension or a file without
    one good record is a UserError (the first errors in the message)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.suffix not in SUFFIXES:
        raise UserError(f"{path}: conversations must be in a {', '.join(SUFFIXES)} file")
    stats, rows = LoadStats(), []
    for where, record in records(path, stats):
        try:
            rows.append({"messages": conversation(record)})
            stats.good += 1
        except BadRecord as e:
            stats.skip(f"{path}{where}: {e}")
    if not rows:
        raise UserError(f"{path}: no usable conversation in {stats.bad} records"
                        + "".join(f"\n  {m}" for m in stats.errors))
    return rows, stats


def records(path: Path, stats: LoadStats):
    """(where, record) for each record of the file; `where` is ":LINE" (JSONL), ": item N" (JSON) or ": row N"
    (parquet), 1-based. Lines that are not JSON are skipped into `stats`."""
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        for i, record in enumerate(table.to_pylist(), 1):
            yield f": row {i}", record
        return
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: bad JSON ({e.msg})") from None
        for i, record in enumerate(data if isinstance(data, list) else [data], 1):
            yield f": item {i}", record
        return
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            stats.skip(f"{path}:{n}: bad JSON ({e.msg})")
            continue
        yield f":{n}", record


def conversation(record) -> list[dict]:
    """One record, in any of the module's shapes, → chatforge messages; a BadRecord says what is wrong."""
    if not isinstance(record, dict):
        raise BadRecord(f"expected an object, got {type(record).__name__}")
    if record.get("messages") is not None:
        messages = openai_messages(record["messages"])
    elif record.get("conversations") is not None:
        messages = sharegpt_messages(record["conversations"])
    elif record.get("prompt") is not None and record.get("completion") is not None:
        prompt, completion = record["prompt"], record["completion"]
        if not (isinstance(prompt, list) and isinstance(completion, list)):
            raise BadRecord("prompt and completion must be lists of messages (TRL's conversational format)")
        messages = openai_messages(prompt + completion)
    else:
        raise BadRecord("no 'messages', 'conversations' or 'prompt' + 'completion'")
    if not messages:
        raise BadRecord("no messages")
    for i, m in enumerate(messages):
        if m["role"] == "tool":
            if not (i and ends_in_call(messages[i - 1])):
                raise BadRecord(f"message {i + 1}: a tool output without a call before it")
        elif i and messages[i - 1]["role"] == "tool" and m["role"] != "assistant":
            raise BadRecord(f"message {i + 1}: after a tool output the assistant continues, got {m['role']!r}")
    return messages


def text_of(content, i: int) -> str:
    """A message's text: a string, or OpenAI's list of content parts ({"type": "text", "text"} only)."""
    if isinstance(content, list):
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                   for p in content):
            raise BadRecord(f"message {i}: only text content parts are supported")
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise BadRecord(f"message {i}: content must be a string, got {type(content).__name__}")
    return content


def call_text(call, i: int) -> tuple[str, str]:
    """An OpenAI tool call → (python | search, the code or query). The arguments are JSON with one string (any
    key: code, query, ...) or the text itself."""
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or fn.get("name") not in CALLS:
        name = fn.get("name") if isinstance(fn, dict) else None
        raise BadRecord(f"message {i}: a call to {name!r}; chatforge's tools are {' and '.join(CALLS)}")
    args = fn.get("arguments", "")
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return fn["name"], args
    if isinstance(args, dict) and len(args) == 1 and isinstance(next(iter(args.values())), str):
        args = next(iter(args.values()))
    if not isinstance(args, str) or not args.strip():
        raise BadRecord(f"message {i}: the {fn['name']} call needs one string argument, got {args!r}")
    return fn["name"], args


def openai_messages(messages) -> list[dict]:
    """OpenAI-style messages → chatforge's. An assistant message with k tool calls becomes k messages, each
    ending in one call, so that each call's tool message can follow it (the chat format has one output per call).
    Assistant content already in chatforge's parts (what sft_data/ and the tasks write) is kept as it is."""
    if not isinstance(messages, list):
        raise BadRecord("messages must be a list")
    out: list[dict] = []
    for i, m in enumerate(messages, 1):
        if not isinstance(m, dict):
            raise BadRecord(f"message {i}: expected an object")
        role = ROLES.get(m.get("role"))
        if role is None:
            raise BadRecord(f"message {i}: unknown role {m.get('role')!r}")
        content, calls = m.get("content"), m.get("tool_calls") or []
        if role == "assistant" and is_parts(content):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(calls, list) or (calls and role != "assistant"):
            raise BadRecord(f"message {i}: tool_calls must be a list, on an assistant message")
        text = text_of("" if content is None and calls else content, i)
        if not text.strip() and not calls:
            raise BadRecord(f"message {i}: empty content")
        if not calls:
            out.append({"role": role, "content": text})
            continue
        parts = [{"type": "text", "text": text}] if text else []
        for call in calls:
            name, arg = call_text(call, i)
            out.append({"role": "assistant", "content": parts + [{"type": name, "text": arg}]})
            parts = []
    return interleave(out)


def is_parts(content) -> bool:
    """Whether `content` is a list of chatforge parts with at least one that is not text."""
    return isinstance(content, list) and bool(content) and all(
        isinstance(p, dict) and p.get("type") in PARTS and isinstance(p.get("text"), str) for p in content) \
        and any(p["type"] != "text" for p in content)


def ends_in_call(m: dict) -> bool:
    return m["role"] == "assistant" and isinstance(m["content"], list) and m["content"][-1]["type"] in CALLS


def interleave(messages: list[dict]) -> list[dict]:
    """[call1, call2, tool1, tool2] → [call1, tool1, call2, tool2]: each tool output right after its call."""
    out: list[dict] = []
    pending: list[dict] = []  # calls waiting for their outputs
    for m in messages:
        if ends_in_call(m):
            pending.append(m)
        elif m["role"] == "tool" and pending:
            out += [pending.pop(0), m]
        else:
            out += pending + [m]
            pending = []
    return out + pending


def sharegpt_messages(turns) -> list[dict]:
    if not isinstance(turns, list):
        raise BadRecord("conversations must be a list")
    out = []
    for i, t in enumerate(turns, 1):
        if not isinstance(t, dict):
            raise BadRecord(f"turn {i}: expected an object")
        role = SHAREGPT_ROLES.get(t.get("from"))
        if role is None:
            raise BadRecord(f"turn {i}: unknown role {t.get('from')!r}")
        value = t.get("value")
        if not isinstance(value, str) or not value.strip():
            raise BadRecord(f"turn {i}: empty content")
        out.append({"role": role, "content": value})
    return out
