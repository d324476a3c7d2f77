"""lm-evaluation-harness over chatforge's model: `chatforge eval lm-eval --tasks hellaswag,arc_easy` (or task YAML
files), the harness's own tasks and metrics on a run's checkpoint.

`ChatforgeLM` is the harness's model interface: log-likelihoods of continuations from the model's logits
(`loglikelihood`, `loglikelihood_rolling`), and text from the engine (`generate_until`). Every context starts with
<|endoftext|>, as the model saw documents in pretraining.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from lm_eval.api.model import TemplateLM

from chatforge.errors import UserError
from chatforge.infer.engine import Engine, SamplingParams
from chatforge.model.checkpoint import load_model
from chatforge.model.gpt import GPT
from chatforge.model.precision import pick_device
from chatforge.runs import Run
from chatforge.tokenizer.bpe import Tokenizer, load_tokenizer


class ChatforgeLM(TemplateLM):
    def __init__(self, model: GPT, tok: Tokenizer, batch_size: int = 8):
        super().__init__()
        self.model, self.tok, self.batch_size = model.eval(), tok, batch_size
        self.seq_len, self._device = model.cfg.seq_len, next(model.parameters()).device  # the harness's `device`
        self.engine = Engine(model, tok, max_batch=batch_size)

    @property
    def eot_token_id(self) -> int:
        return self.tok.bos_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return ([] if add_special_tokens is False else [self.tok.bos_id]) + self.tok.encode(string)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tok.decode(tokens)

    @torch.no_grad()
    def _logprobs(self, rows: list[list[int]]) -> list[torch.Tensor]:
        """Each row's log-probabilities (len - 1, vocab) of its tokens after the first, in one right-padded batch
        (causal attention: padding after a row changes none of its positions)."""
        width = max(len(r) for r in rows) - 1
        x = torch.tensor([r[:-1] + [0] * (width + 1 - len(r)) for r in rows], device=self.device)
        logp = F.log_softmax(self.model(x).float(), dim=-1)
        return [logp[i, : len(r) - 1] for i, r in enumerate(rows)]

    def _score(self, pieces: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        """(summed log-probability, all greedy) of the last n tokens of each token list, at most seq_len + 1 long."""
        out = []
        for i in range(0, len(pieces), self.batch_size):
            batch = pieces[i : i + self.batch_size]
            for (ids, n), logp in zip(batch, self._logprobs([ids for ids, _ in batch]), strict=True):
                target = torch.tensor(ids[-n:], device=self.device)
                lp = logp[-n:]
                out.append((lp.gather(1, target[:, None]).sum().item(), bool((lp.argmax(-1) == target).all())))
        return out

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        # the context is cut from the left to fit the window; the continuation must fit whole
        pieces = []
        for _, context_enc, continuation_enc in requests:
            if len(continuation_enc) > self.seq_len:
                raise UserError(f"a continuation of {len(continuation_enc)} tokens is longer than the model's "
                                f"context ({self.seq_len})")
            pieces.append(((context_enc + continuation_enc)[-(self.seq_len + 1):], len(continuation_enc)))
        return self._score(pieces)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """The whole text's log-probability, in windows of seq_len predicted tokens, each with as much of the text
        before it as fits (perplexity tasks)."""
        out = []
        for req in requests:
            ids = self.tok_encode(req.args[0])
            windows = [(ids[max(0, b - 1 - self.seq_len) : b], b - a)
                       for a in range(1, len(ids), self.seq_len) for b in [min(a + self.seq_len, len(ids))]]
            out.append(sum(lp for lp, _ in self._score(windows)))
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy (or the task's sampling) continuations, cut at the task's stop strings, batched on the engine."""
        reqs = []
        for req in requests:
            context, kwargs = req.args
            kwargs = dict(kwargs)
            until = kwargs.pop("until", None) or []
            max_tokens = int(kwargs.pop("max_gen_toks", 256))
            temperature = float(kwargs.pop("temperature", 0.0)) if kwargs.pop("do_sample", False) else 0.0
            params = SamplingParams(max_tokens=max_tokens, temperature=temperature,
                                    stop=tuple([until] if isinstance(until, str) else until),
                                    stop_ids=(self.tok.bos_id,))
            prompt = self.tok_encode(context)[-max(1, self.seq_len - max_tokens):]
            reqs.append(self.engine.submit(prompt, params))
        for _ in self.engine.run():
            pass
        return [r.text for r in reqs]


def task_names(spec: str) -> tuple[list[str], list[str]]:
    """`eval.lm_eval_tasks` as (task names, directories of task YAML files to include): a YAML file stands for the
    task it defines."""
    names, include = [], []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item.endswith((".yaml", ".yml")):
            path = Path(item)
            if not path.is_file():
                raise UserError(f"no task file {path}")
            task = (yaml.safe_load(path.read_text()) or {}).get("task")
            if not task:
                raise UserError(f"{path} defines no `task`")
            names.append(task)
            include.append(str(path.parent.resolve()))
        else:
            names.append(item)
    if not names:
        raise UserError("lm-eval needs tasks: --tasks NAME,... (harness task names or task YAML files)")
    return names, list(dict.fromkeys(include))


def evaluate_harness(run: Run, stages: list[str]) -> tuple[dict, dict]:
    """The harness's tasks (`eval.lm_eval_tasks`, `eval.lm_eval_limit` examples each) on each checkpoint in
    `stages`: its results per stage, and the figures (each task's metrics) per stage."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    ec = run.config.eval
    names, include = task_names(ec.lm_eval_tasks)
    tok = load_tokenizer(run.path / "tokenizer")
    manager = TaskManager(include_path=include or None)
    if unknown := [n for n in names if n not in manager.all_tasks]:
        raise UserError(f"unknown lm-eval task(s) {', '.join(unknown)}")
    out, figures = {}, {}
    for stage in stages:
        lm = ChatforgeLM(load_model(run.path / stage, pick_device()), tok)
        result = simple_evaluate(model=lm, tasks=names, task_manager=manager, limit=ec.lm_eval_limit or None,
                                 log_samples=False, bootstrap_iters=0)
        out[stage] = {k: result[k] for k in ("results", "n-shot", "n-samples") if k in result}
        figures[stage] = {task: {k: v for k, v in r.items() if isinstance(v, int | float)}
                          for task, r in result["results"].items()}
        for task, metrics in figures[stage].items():
            print(f"lm-eval {stage} {task}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return out, figures
