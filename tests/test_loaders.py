import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chatforge.errors import UserError
from chatforge.posttrain.loaders import KEPT_ERRORS, load_conversations

USER, ASSISTANT = {"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5."}


def call(name: str, arguments: str, id_: str = "c1") -> dict:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


def write_jsonl(path, lines: list) -> None:
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))


def test_openai_jsonl_good_lines_and_each_kind_of_bad_line(tmp_path):
    p = tmp_path / "data.jsonl"
    write_jsonl(p, [
        {"messages": [{"role": "system", "content": "Be brief."}, USER, ASSISTANT]},
        "{not json",
        {"messages": [USER, {"role": "bot", "content": "hi"}]},
        {"messages": [USER, {"role": "assistant", "content": "  "}]},
        {"messages": [USER, {"role": "tool", "content": "42"}]},
        {"text": "a document, not a conversation"},
        "",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}, ASSISTANT]},
    ])
    rows, stats = load_conversations(p)
    assert (stats.good, stats.bad) == (2, 5)
    assert rows[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert rows[1]["messages"][0] == {"role": "user", "content": "Hi"}  # OpenAI content parts become text
    assert stats.errors == [
        f"{p}:2: bad JSON (Expecting property name enclosed in double quotes)",
        f"{p}:3: message 2: unknown role 'bot'",
        f"{p}:4: message 2: empty content",
        f"{p}:5: message 2: a tool output without a call before it",
        f"{p}:6: no 'messages', 'conversations' or 'prompt' + 'completion'",
    ][:KEPT_ERRORS]


def test_openai_tool_calls_become_python_and_search_parts(tmp_path):
    p = tmp_path / "tools.jsonl"
    write_jsonl(p, [
        {"messages": [USER, {"role": "assistant", "content": None, "tool_calls": [call("python", '{"code": "2+3"}')]},
                      {"role": "tool", "tool_call_id": "c1", "content": "5"},
                      {"role": "assistant", "content": "It is 5."}]},
        # two calls in one message, their outputs after both: each output follows its own call
        {"messages": [USER, {"role": "assistant", "content": "Let me look.",
                             "tool_calls": [call("search", '{"query": "Paris"}'), call("python", "1+1", "c2")]},
                      {"role": "tool", "content": "Paris is in France."}, {"role": "tool", "content": "2"},
                      {"role": "assistant", "content": "Done."}]},
        {"messages": [USER, {"role": "assistant", "content": None, "tool_calls": [call("weather", "{}")]}]},
    ])
    rows, stats = load_conversations(p)
    assert (stats.good, stats.bad) == (2, 1)
    assert "a call to 'weather'; chatforge's tools are python and search" in stats.errors[0]
    assert rows[0]["messages"][1:] == [
        {"role": "assistant", "content": [{"type": "python", "text": "2+3"}]},
        {"role": "tool", "content": "5"},
        {"role": "assistant", "content": "It is 5."}]
    assert rows[1]["messages"][1:] == [
        {"role": "assistant", "content": [{"type": "text", "text": "Let me look."},
                                          {"type": "search", "text": "Paris"}]},
        {"role": "tool", "content": "Paris is in France."},
        {"role": "assistant", "content": [{"type": "python", "text": "1+1"}]},
        {"role": "tool", "content": "2"},
        {"role": "assistant", "content": "Done."}]


def test_chatforge_parts_pass_through(tmp_path):
    parts = [{"type": "python", "text": "2+3"}, {"type": "output", "text": "5"}, {"type": "text", "text": "5."}]
    p = tmp_path / "own.jsonl"
    write_jsonl(p, [{"messages": [USER, {"role": "assistant", "content": parts}]}])
    rows, _ = load_conversations(p)
    assert rows == [{"messages": [USER, {"role": "assistant", "content": parts}]}]


def test_sharegpt_json_and_jsonl(tmp_path):
    good = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                              {"from": "gpt", "value": "Hello!"}]}
    bad = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "bot", "value": "Hello!"}]},
           {"conversations": [{"from": "human", "value": ""}, {"from": "gpt", "value": "Hello!"}]},
           {"conversations": [{"from": "human", "value": "Hi"}, {"from": "tool", "value": "42"}]}]
    p = tmp_path / "share.json"
    p.write_text(json.dumps([good, *bad]))
    rows, stats = load_conversations(p)
    assert rows == [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                                  {"role": "assistant", "content": "Hello!"}]}]
    assert stats.errors == [f"{p}: item 2: turn 2: unknown role 'bot'", f"{p}: item 3: turn 1: empty content",
                            f"{p}: item 4: message 2: a tool output without a call before it"]
    q = tmp_path / "share.jsonl"
    write_jsonl(q, [good])
    assert load_conversations(q)[0] == rows


def test_trl_prompt_completion(tmp_path):
    p = tmp_path / "trl.jsonl"
    write_jsonl(p, [{"prompt": [USER], "completion": [ASSISTANT]}, {"prompt": "What is 2 + 3?", "completion": "5."}])
    rows, stats = load_conversations(p)
    assert rows == [{"messages": [USER, ASSISTANT]}]
    assert stats.errors == [f"{p}:2: prompt and completion must be lists of messages (TRL's conversational format)"]


def test_parquet_messages_column(tmp_path):
    p = tmp_path / "smoltalk.parquet"
    messages = [[USER, ASSISTANT], [USER, {"role": "narrator", "content": "x"}]]
    pq.write_table(pa.table({"messages": messages, "source": ["a", "b"]}), p)
    rows, stats = load_conversations(p)
    assert rows == [{"messages": [USER, ASSISTANT]}]
    assert stats.errors == [f"{p}: row 2: message 2: unknown role 'narrator'"]


def test_unusable_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="gone.jsonl: no such file"):
        load_conversations(tmp_path / "gone.jsonl")
    (tmp_path / "chats.txt").write_text("hi")
    with pytest.raises(UserError, match="must be in a .jsonl, .json, .parquet file"):
        load_conversations(tmp_path / "chats.txt")
    p = tmp_path / "bad.jsonl"
    write_jsonl(p, ["nope", {"messages": [{"role": "bot", "content": "x"}]}])
    with pytest.raises(UserError, match=r"no usable conversation in 2 records\n.*bad.jsonl:1: bad JSON"):
        load_conversations(p)
    (tmp_path / "broken.json").write_text('[{"messages": []},\n')
    with pytest.raises(UserError, match=r"broken.json:2: bad JSON"):
        load_conversations(tmp_path / "broken.json")
