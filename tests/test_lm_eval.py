import json
import os

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import chatforge
from test_export_hf import random_model
from test_tokenizer_hf import bbc_texts

from chatforge.export.hf import write_hf_dir
from chatforge.tokenizer.bpe import train_tokenizer

pytest.importorskip("lm_eval", reason="lm-eval (the dev extra) is not installed")
from lm_eval.api.instance import Instance  # noqa: E402

from chatforge.eval.lm_eval import ChatforgeLM  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(bbc_texts()[:100], 512)


@pytest.fixture(scope="module")
def lm(tok):
    return ChatforgeLM(random_model(tok.vocab_size, True), tok, batch_size=3)


def request(kind: str, *args) -> Instance:
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def logprob(lm, ids: list[int], n: int) -> float:
    """The summed log-probability of the last n of `ids`, from one plain forward pass."""
    with torch.no_grad():
        logp = F.log_softmax(lm.model(torch.tensor([ids[:-1]]))[0], -1)
    return sum(logp[i - 1, ids[i]].item() for i in range(len(ids) - n, len(ids)))


def test_loglikelihood_is_the_models(lm, tok):
    pairs = [("The bank raised", " interest rates"), ("Shares in", " the company fell sharply"), ("", "Hello"),
             ("A context with a trailing space ", "word")]
    out = lm.loglikelihood([request("loglikelihood", c, x) for c, x in pairs])  # one padded batch of 3, then 1
    for (context, continuation), (lp, greedy) in zip(pairs, out, strict=True):
        context, moved = context.rstrip(), context[len(context.rstrip()):]  # the harness moves trailing spaces
        whole = [tok.bos_id, *tok.encode(context + moved + continuation)]
        n = len(whole) - len([tok.bos_id, *tok.encode(context)])
        assert lp == pytest.approx(logprob(lm, whole, n), abs=1e-4)
        assert isinstance(greedy, bool)


def test_rolling_windows_cover_every_token_once(lm, tok, monkeypatch):
    text = " ".join(bbc_texts()[200].split()[:120])
    ids = [tok.bos_id, *tok.encode(text)]
    assert len(ids) > 2 * lm.seq_len
    pieces = []
    score = lm._score
    monkeypatch.setattr(lm, "_score", lambda p: pieces.extend(p) or score(p))
    total = lm.loglikelihood_rolling([request("loglikelihood_rolling", text)])[0]
    targets = [t for window, n in pieces for t in window[-n:]]
    assert targets == ids[1:] and all(len(w) <= lm.seq_len + 1 for w, _ in pieces)
    assert total == pytest.approx(sum(logprob(lm, w, n) for w, n in pieces), abs=1e-3)
    short = "A short text."
    assert lm.loglikelihood_rolling([request("loglikelihood_rolling", short)])[0] == pytest.approx(
        lm.loglikelihood([request("loglikelihood", "", short)])[0][0], abs=1e-4)


def test_generate_until_is_greedy_and_stops(lm, tok):
    context = "The minister said"
    full = lm.generate_until([request("generate_until", context, {"until": ["\u0000"], "max_gen_toks": 12})])[0]
    seq = [tok.bos_id, *tok.encode(context)]
    with torch.no_grad():
        for _ in range(12):
            seq.append(int(lm.model(torch.tensor([seq]))[0, -1].argmax()))
    expected = tok.decode(seq[len(tok.encode(context)) + 1:])
    assert full == expected.split("<|endoftext|>")[0]
    stop = full[len(full) // 2:][:2]
    if stop.strip():
        cut = lm.generate_until([request("generate_until", context, {"until": [stop], "max_gen_toks": 12})])[0]
        assert cut == full[: full.index(stop)]


TASKS = {
    "cf_choice": {"output_type": "multiple_choice", "doc_to_text": "{{question}}", "doc_to_target": "{{answer}}",
                  "doc_to_choice": "{{choices}}", "metric_list": [{"metric": "acc"}]},
    "cf_gen": {"output_type": "generate_until", "doc_to_text": "Q: {{question}}\nA:", "doc_to_target": "{{target}}",
               "generation_kwargs": {"until": ["\n"], "max_gen_toks": 8, "do_sample": False},
               "metric_list": [{"metric": "exact_match"}]},
    "cf_ppl": {"output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "{{text}}",
               "metric_list": [{"metric": "word_perplexity"}]},
}


def test_cli_runs_local_tasks_offline(tok, tmp_path):
    """`chatforge eval lm-eval` on a run (an imported export: no training needed) with task YAML files and a data
    file written here; no network (HF_*_OFFLINE)."""
    hf = write_hf_dir(random_model(tok.vocab_size, True), tok, tmp_path / "hf", chat=False, card="")
    run = tmp_path / "run"
    chatforge("import", "hf", str(hf), "--run", str(run), "--preset", "micro")
    data = tmp_path / "tasks" / "data.jsonl"
    data.parent.mkdir()
    docs = [{"question": f"What is {i} + 1?", "choices": [str(i + 1), str(i + 2)], "answer": 0, "target": str(i + 1),
             "text": bbc_texts()[i][:300]} for i in range(6)]
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    files = []
    for name, spec in TASKS.items():
        path = tmp_path / "tasks" / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"task": name, "dataset_path": "json", "test_split": "train",
                                        "dataset_kwargs": {"data_files": str(data)}, **spec}))
        files.append(str(path))
    env = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    chatforge("eval", "lm-eval", "--run", str(run), "--tasks", ",".join(files), "--limit", "4", "--stage", "base",
              env={**os.environ, **env})
    result = json.loads((run / "eval" / "lm-eval.json").read_text())["base"]
    assert result["n-samples"]["cf_choice"]["effective"] == 4
    assert 0 <= result["results"]["cf_choice"]["acc,none"] <= 1
    assert 0 <= result["results"]["cf_gen"]["exact_match,none"] <= 1
    assert result["results"]["cf_ppl"]["word_perplexity,none"] > 1
    proc = chatforge("eval", "lm-eval", "--run", str(run), "--tasks", "no_such_task_xyz", check=False,
                     env={**os.environ, **env})
    assert proc.returncode == 2 and "unknown lm-eval task(s) no_such_task_xyz" in proc.stderr
