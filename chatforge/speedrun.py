"""What `chatforge speedrun` prints before it starts: each stage's time estimated from its FLOPs and this device's
peak (pretrain/mfu.py), so a user learns before the first step whether a preset fits their machine.

Training stages cost 6N FLOPs a token (GPT.flops_per_token) at TRAIN_MFU of the peak; sampling (probing, RL
rollouts, evaluation) costs 2N a token at the far lower SAMPLE_MFU that small-batch decoding reaches. A stage with a
time budget (max_minutes) costs at most that. The efficiencies are the tiny demo's on the 2-core CPU
(docs/benchmarks.md: pretraining at 0.6 of the measured matmul peak, RL rollouts at ~5%).
"""

import torch

from chatforge.config import Config
from chatforge.model.gpt import GPT
from chatforge.model.precision import autocast_dtype
from chatforge.pretrain.horizon import resolve_pretrain
from chatforge.pretrain.mfu import peak_flops

TRAIN_MFU = {"cpu": 0.55, "cuda": 0.40}
SAMPLE_MFU = {"cpu": 0.05, "cuda": 0.01}
REPLY_TOKENS = 32  # a typical sampled answer: a tool call and a sentence
PROMPT_TOKENS = 64  # a typical task prompt in the chat format
FIXED_S = {"data": 15.0, "tokenizer": 5.0, "index": 5.0, "export": 2.0, "report": 2.0}  # the sample corpus's stages


def stage_work(config: Config, processes: int = 1) -> dict[str, tuple[float, float, float]]:
    """Per stage: (tokens trained on, tokens sampled, its time budget in seconds or 0)."""
    pc = resolve_pretrain(config.pretrain, config.model, processes)
    sc, qc, rc, ec = config.sft, config.probe, config.rl, config.eval
    chat_examples = (ec.chat_examples or 100) * len(sc.mixture.split(","))
    rl_rows = rc.steps * rc.prompts * rc.group
    return {
        "pretrain": (pc.steps * pc.batch_tokens, 0, 60 * pc.max_minutes),
        "sft": (sc.steps * sc.batch_size * sc.max_len, 0, 60 * sc.max_minutes),
        "probe": (qc.steps * sc.batch_size * sc.max_len, qc.questions * qc.samples * REPLY_TOKENS, 0),
        "rl": (rl_rows * rc.epochs * (PROMPT_TOKENS + rc.max_tokens), rl_rows * rc.max_tokens, 60 * rc.max_minutes),
        # chat tasks on sft, probe and rl, the RL task on two checkpoints, and scoring of val tokens
        "eval": (0, (3 * chat_examples + 2 * rc.eval_examples) * REPLY_TOKENS, 0),
    }


def estimate(config: Config, device: str, peak: float | None = None, processes: int = 1) -> dict[str, float]:
    """Seconds per stage of a speedrun with `config` on `processes` devices like `device`, whose peak FLOP/s is
    measured when not given."""
    kind = "cuda" if device.startswith("cuda") else "cpu"
    peak = peak or peak_flops(device, autocast_dtype(config.pretrain.dtype, device))
    with torch.device("meta"):
        train_flops = GPT(config.model).flops_per_token()
    sample_flops = train_flops / 3  # the forward pass alone
    out = {"data": FIXED_S["data"], "tokenizer": FIXED_S["tokenizer"]}
    for stage, (trained, sampled, budget) in stage_work(config, processes).items():
        seconds = (trained * train_flops / (TRAIN_MFU[kind] * processes)
                   + sampled * sample_flops / SAMPLE_MFU[kind]) / peak
        out[stage] = min(seconds, budget) if budget else seconds
    for stage in ("index", "export", "report"):
        out[stage] = FIXED_S[stage]
    return out


def print_estimate(config: Config, device: str, processes: int = 1) -> dict[str, float]:
    peak = peak_flops(device, autocast_dtype(config.pretrain.dtype, device))  # the dtype training will run in
    seconds = estimate(config, device, peak, processes)
    parts = ", ".join(f"{stage} {s / 60:.1f}" for stage, s in seconds.items() if s >= 30)
    print(f"speedrun estimate: {sum(seconds.values()) / 60:.0f} min on {processes} x {device} at a peak of "
          f"{peak / 1e12:.3g} TFLOP/s ({parts} min); other load on the machine lowers the peak measured here")
    return seconds
