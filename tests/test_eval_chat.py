import json
import shutil

from conftest import chatforge

from chatforge.infer.tools import Tools
from chatforge.model.checkpoint import load_model
from chatforge.tasks.common import Task
from chatforge.tasks.score import score_examples
from chatforge.tokenizer.bpe import load_tokenizer


def test_eval_chat_json_has_the_figures_at_top_level(micro_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(micro_run, run)
    (run / "eval").mkdir(exist_ok=True)
    (run / "eval" / "think.json").write_text(json.dumps({"think_first_acc": 0.5, "answer_first_acc": 0.25}))
    (run / "eval" / "probe.json").write_text(json.dumps({"n": 200, "refusal_invented_after": 0.75,
                                                         "known_acc_drop": 0.03}))
    out = chatforge("eval", "chat", "--run", str(run), "--stage", "sft", "--json", "--eval.chat_examples=8")
    figures = json.loads(out.stdout.splitlines()[-1])
    assert figures["stage"] == "sft"
    assert {"identity_false_rate", "unfinished_rate", "think_first_acc", "answer_first_acc", "known_acc_drop"} <= set(
        figures)
    assert figures["think_first_acc"] == 0.5 and figures["known_acc_drop"] == 0.03 and "n" not in figures
    assert set(figures["tasks"]) == {"identity", "arithmetic"}  # the micro mixture
    for task in figures["tasks"].values():
        assert task["n"] == 8 and {"score", "unfinished_rate", "too_long_rate"} <= set(task)
    assert all(0 <= v <= 1 for k, v in figures.items() if k not in ("stage", "tasks"))
    assert "identity_false_rate" in out.stdout  # the table before the JSON
    saved = json.loads((run / "eval" / "chat.json").read_text())["sft"]
    assert saved["figures"] == {k: v for k, v in figures.items() if k not in ("stage", "tasks")}


class Echo(Task):
    """A task whose checker wants the word "yes"; its examples choose whether tools are on."""
    name = "echo"

    def __init__(self, prompts: list[tuple[str, bool]]):
        self.prompts = prompts

    def examples(self, split, n, seed, config):
        return [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": "yes"}], "tools": t}
                for p, t in self.prompts[:n]]

    def score(self, example, reply):
        return float("yes" in str(reply))


def test_score_examples_counts_unfinished_and_too_long_replies(micro_run, monkeypatch):
    import chatforge.tasks.score as chat

    model, tok = load_model(micro_run / "sft"), load_tokenizer(micro_run / "tokenizer")
    engines = []
    real = chat.Engine

    def engine(*args, tools=None, **kw):
        engines.append(tools)
        return real(*args, tools=tools, **kw)

    monkeypatch.setattr(chat, "MAX_TOKENS", 1)  # no reply ends (with <|im_end|>) at its first token
    monkeypatch.setattr(chat, "Engine", engine)
    task = Echo([("Hi", True), ("Hello", False), ("word " * 200, True)])  # the last one is longer than the context
    tools = Tools()
    result = score_examples(model, tok, [(task, ex) for ex in task.examples("test", 3, 0, None)], tools, "chatforge")
    assert engines == [tools, None]  # the example with "tools": False ran on an engine without tools
    echo = result["tasks"]["echo"]
    assert echo["n"] == 2 and echo["too_long_rate"] == round(1 / 3, 4) and echo["unfinished_rate"] == 1.0
    assert set(result["figures"]) == {"echo_acc", "unfinished_rate", "identity_false_rate"}
    assert result["figures"]["unfinished_rate"] == 1.0 and result["figures"]["identity_false_rate"] == 0.0
