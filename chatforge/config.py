"""Dataclass configs, the presets, and `--section.field=value` overrides.

One dial, `depth`, sizes a model (nanochat style): width = 64 * depth in 128-dim heads, so d12 is
GPT-2 small's width and depth (6 heads of 128 instead of its 12 of 64). Presets fix the depth plus what
the machine it targets can afford.
"""

import dataclasses
import json
import math
import typing
import warnings
from dataclasses import dataclass, field

from chatforge.errors import UserError


@dataclass
class GPTConfig:
    vocab_size: int = 4096
    seq_len: int = 256
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    n_kv_head: int = 4
    mlp_hidden: int = 0  # 0: derived, ~8/3 * n_embd rounded up to a multiple of 64 (Llama)
    rope_theta: float = 10000.0
    qk_norm: bool = True
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise UserError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.n_head % self.n_kv_head:
            raise UserError(f"n_head={self.n_head} is not divisible by n_kv_head={self.n_kv_head}")
        if (self.n_embd // self.n_head) % 2:
            raise UserError(f"head_dim={self.n_embd // self.n_head} must be even for RoPE")

    @property
    def ffn_dim(self) -> int:
        return self.mlp_hidden or 64 * math.ceil(8 * self.n_embd / 3 / 64)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


@dataclass
class DataConfig:
    max_docs: int = 0  # 0 = every document of the sample corpus
    val_fraction: float = 0.05  # share of documents (by id hash) held out for validation
    docs_per_part: int = 10_000
    inputs: str = ""  # comma-separated files, directories or globs of web data; "" = the sample corpus
    steps: str = ""  # comma-separated step names; "" = the default for the input (data/pipeline.py)
    workers: int = 1  # shard worker processes
    executor: str = "local"  # local | ray
    keep_dropped: bool = False  # also write dropped documents with their reason (data/dropped/)
    files_per_shard: int = 200  # HTML/text files per shard (archives and parquet files are a shard each)
    extractor: str = "resiliparse"  # resiliparse | trafilatura
    languages: str = "en"  # comma-separated fastText codes to keep; "" = any
    language_threshold: float = 0.65  # FineWeb's
    min_chars: int = 200  # the `length` step
    url_domains: str = ""  # blocklist files for the `url` step, one entry a line
    url_substrings: str = ""
    url_words: str = ""
    url_soft_words: str = ""
    # synthetic pages that join the training split (every preset sets them: SYNTHETIC below); 0 = none
    facts: int = 0  # invented people whose fact pages probing and the facts/search tasks ask about (data/facts.py)
    directory_pages: int = 0  # lists naming one attribute of several fact people (data/facts.py)
    copy_docs: int = 0  # pages repeating spans, so the model learns to copy from its context (data/copying.py)


@dataclass
class TokenizerConfig:
    vocab_size: int = 4096  # including the 256 byte tokens and the special tokens
    workers: int = 0  # processes encoding the shards; 0 = one per CPU core
    from_dir: str = ""  # a trained tokenizer/ to reuse instead of training (continued pretraining needs one)


@dataclass
class PretrainConfig:
    steps: int = 900  # 0: derived, param_data_ratio x scaling_params(model) / tokens per step
    batch_size: int = 16  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    # tokens per optimizer step. >0: exactly these, grad_accum derived (so DDP-independent); -1: derived from
    # the model by batch_tokens_for; 0: batch_size x grad_accum x processes rows
    batch_tokens: int = 0
    param_data_ratio: float = 10.5  # training tokens per scaling parameter where derived (nanochat's; Chinchilla 20)
    lr: float = 0.0  # AdamW: embeddings (10x), head, norms, and matrices if matrix_lr=0; 0 = adamw_lr(width)
    matrix_lr: float = 0.02  # Muon for the hidden matrices (0 = AdamW); beat 0.01 and 0.04 on tiny (docs/benchmarks.md)
    warmup_steps: int = 20
    warmdown_frac: float = 0.3  # final fraction of training with linearly decaying LR
    weight_decay: float = 0.0
    max_minutes: float = 0.0  # >0: time budget; the LR schedule follows whichever runs out first
    eval_every: int = 100
    eval_tokens: int = 65_536
    sample_tokens: int = 32  # at each evaluation, greedy continuations of a few fixed prompts (0 = off)
    ckpt_every: int = 200
    dtype: str = "auto"  # auto | float32 | bfloat16 (auto: bf16 where the hardware has it)
    compile: bool = False
    seed: int = 1337
    init_from: str = ""  # a checkpoint directory to continue pretraining from (domain adaptation)

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise UserError(f"pretrain.steps must be >0, or 0 (derived from param_data_ratio), got {self.steps}")
        if self.batch_tokens < -1:
            raise UserError(f"pretrain.batch_tokens must be >0 (exact), 0 (batch_size x grad_accum x processes) "
                            f"or -1 (derived from the depth), got {self.batch_tokens}")


@dataclass
class SFTConfig:
    identity: str = "chatforge"  # the name the assistant answers to
    creator: str = "the chatforge developers"
    # what the identity task says the assistant is made of and can do (chatforge/tasks/identity.py)
    trained_on: str = "BBC news articles and Shakespeare's plays"
    can_do: str = "chat, read a document you paste in, and do arithmetic with a python tool"
    cannot_do: str = "browse the web, see images, or remember earlier conversations"
    # what SFT trains on, "SOURCE:WEIGHT,...": a task of chatforge.tasks.TASKS makes WEIGHT conversations; a
    # JSONL file of OpenAI-style {"messages": [...]} is taken WEIGHT times (0.5: a seeded half). chatforge/tasks/
    mixture: str = ("identity:800,chat:600,safety:600,context:1600,arithmetic:2000,letters:1500,arith_think:1000,"
                    "facts:1000,search:400,countdown:1500")
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    max_len: int = 256
    seed: int = 1337
    ckpt_every: int = 100  # steps between checkpoints (each with a val loss): bounds the work a kill can lose
    max_minutes: float = 0.0  # >0: time budget; the LR decay follows whichever of it and the steps runs out first
    eval_examples: int = 16  # held-out examples per task answered and scored at each checkpoint; 0: none


@dataclass
class ProbeConfig:
    """The `probe` stage (chatforge/posttrain/probe.py): Llama 3's factuality recipe on the fact corpus."""
    questions: int = 400  # probe questions about the people of the facts task's training split, every exposure
    samples: int = 5  # sampled answers per question: known if most are right, unknown if none is
    temperature: float = 0.8
    weight: float = 3.0  # times each probe conversation joins the sft mixture for the fine-tuning
    steps: int = 60  # fine-tuning steps from the sft checkpoint
    lr: float = 3e-4
    eval_examples: int = 200  # held-out facts examples scored before and after (half about invented entities)


@dataclass
class RLConfig:
    """GRPO (chatforge/rl/grpo.py): G sampled answers per prompt, rewarded by the task's verifier, or by the
    reward model (RLHF), plus a format reward."""
    task: str = "arithmetic"  # a task of chatforge.tasks.TASKS, or a user's "module:function" returning a Task
    # other tasks practised alongside, "TASK:N,...": N prompts of each join the pool, rewarded by their own verifiers,
    # so that RL on one task does not wear away what SFT taught the others
    mix: str = ""
    reward: str = "task"  # task: the verifier's score | model: the reward model in reward/ (RLHF)
    steps: int = 20
    prompts: int = 8  # prompts per step
    group: int = 8  # samples per prompt (G)
    max_tokens: int = 64  # sampled tokens per answer
    temperature: float = 1.0
    epochs: int = 2  # optimizer steps on each step's rollouts (PPO's inner epochs)
    clip: float = 0.2  # PPO's epsilon: the ratio is clipped to [1 - clip, 1 + clip]
    kl: float = 0.0  # coefficient of the k3 KL to the sft model; 0: no reference model
    scale_rewards: bool = True  # divide advantages by the group's std; false: Dr. GRPO (Liu et al., 2025)
    accuracy_weight: float = 1.0
    format_weight: float = 0.1  # reward for <think>...</think> followed by an answer
    tools: bool = True  # the rollouts may call the python tool, as tasks' answers do (its output is not trained on)
    ignore_eos: bool = False  # sample every answer to max_tokens: fixed lengths for bench/rl.py
    # PPO-ptx (InstructGPT, Ouyang et al. 2022): x the NLL per token of the start checkpoint's own SFT conversations
    # (INIT_data/train.jsonl) added to the loss, so RL keeps what SFT taught where its rewards do not reach; 0: off
    ptx: float = 0.0
    ptx_rows: int = 2  # packed rows of sft.max_len tokens a step for the ptx term
    lr: float = 1e-4
    # Adam's first steps move every weight by the full rate whatever its gradient's size: at 1e-4 from the start
    # the first step alone put the tiny policy 30 nats per token from its start (k3 KL)
    warmup_steps: int = 10
    train_examples: int = 4000  # the pool of the task's practice prompts
    eval_examples: int = 500  # held-out examples `chatforge eval rl` scores (a standard error near 2 points)
    seed: int = 1337
    ckpt_every: int = 10
    max_minutes: float = 0.0


@dataclass
class DPOConfig:
    """DPO (chatforge/rl/dpo.py) on preference pairs, from the sft model."""
    data: str = ""  # TRL-style JSONL (prompt/chosen/rejected); "": correct-vs-wrong pairs made from rl.task
    beta: float = 0.1
    steps: int = 60
    batch_size: int = 8
    lr: float = 1e-4
    warmup_steps: int = 10  # as rl.warmup_steps: Adam's first steps move every weight by the full rate
    sft_weight: float = 1.0  # x the chosen answers' NLL per token added to the loss (RPO); 0: plain DPO
    pairs: int = 800  # pairs made from the task when data is ""
    seed: int = 1337


@dataclass
class RewardConfig:
    """The reward model (chatforge/rl/reward.py): the sft model's trunk with a scalar head, Bradley-Terry loss."""
    data: str = ""  # extra TRL-style JSONL pairs (prompt/chosen/rejected), comma-separated
    pairs: int = 600  # format and concise pairs made from rl.task's train split (each learnt whole at 600)
    correct_pairs: int = 3000  # correct-vs-wrong ones: held-out accuracy on tiny 0.94 vs 0.61 with 600
    margin: float = 0.0  # Bradley-Terry with a margin: -log sigmoid(r_chosen - r_rejected - margin)
    steps: int = 600  # bounded by time (minutes on tiny), not by the loss, which still falls at 600
    batch_size: int = 16
    lr: float = 3e-4
    test_pairs: int = 600  # held-out pairs per type from rl.task's test split (unseen operands)
    test_fraction: float = 0.2  # the share of a reward.data file's pairs held out
    seed: int = 1337


@dataclass
class DistillConfig:
    """Distillation (chatforge/rl/distill.py): a teacher run's sampled answers become this run's SFT data."""
    teacher: str = ""  # the teacher's run directory (its most trained checkpoint and its tokenizer)
    examples: int = 1000  # train-split prompts of rl.task the teacher answers
    samples: int = 1  # answers per prompt
    only_correct: bool = True  # keep answers the task's verifier accepts (rejection sampling)
    temperature: float = 0.7


SEARCH_BACKENDS = ("auto", "bm25", "hybrid", "http", "off")


@dataclass
class ToolsConfig:
    """The tools `chatforge chat` gives the model (chatforge/infer/tools.py, search.py)."""
    python: bool = True
    # auto: the run's index, hybrid if `data index --dense` embedded it, else BM25, off without an index;
    # bm25 | hybrid (BM25 + dense) | http (search_url) | off
    search: str = "auto"
    search_url: str = ""  # a SearXNG-style JSON API, for search=http
    top_k: int = 3  # passages pasted into the context per search call

    def __post_init__(self) -> None:
        if self.search not in SEARCH_BACKENDS:
            raise UserError(f"tools.search must be one of {', '.join(SEARCH_BACKENDS)}, got {self.search!r}")
        if self.top_k < 1:
            raise UserError(f"tools.top_k must be >= 1, got {self.top_k}")


@dataclass
class EvalConfig:
    """`chatforge eval` (chatforge/eval/run.py)."""
    bpb_tokens: int = 0  # validation tokens scored for bits per byte; 0: pretrain.eval_tokens, as pretraining scores
    sample_tokens: int = 48  # the length of each base-model sample and chat answer the report shows
    lm_eval_tasks: str = ""  # `eval lm-eval`: comma-separated harness task names or task YAML files (--tasks)
    lm_eval_limit: int = 0  # examples per lm-eval task; 0: all (--limit)
    chat_examples: int = 0  # held-out examples per task for `eval chat`; 0: eval/chat.py's EXAMPLES (100)
    fewshot_items: int = 200  # `eval fewshot`: items per task family, scored 0-shot and 5-shot (eval/fewshot.py)
    regurgitation_docs: int = 64  # `eval regurgitation`: train and val documents continued (eval/regurgitation.py)
    regurgitation_prefix: int = 32  # tokens of each document the model is given
    regurgitation_tokens: int = 32  # greedy tokens compared with the document's own next ones
    arena_judge: str = "verifier"  # `eval arena`: the tasks' verifiers, or "reward": the run's reward model (reward/)


@dataclass
class Config:
    """The whole config of a run, a section per dataclass field: a new section is one field here (to_dict,
    from_dict, apply_overrides and the presets follow the fields)."""
    preset: str = "tiny"
    depth: int = 4
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: GPTConfig = field(default_factory=GPTConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


def adamw_lr(n_embd: int) -> float:
    """AdamW's LR from the width: 6e-3 was best for the tiny preset (width 256, docs/benchmarks.md), scaled by
    1/sqrt(width) beyond it as nanochat scales its embedding and head LRs (an Adam step moves each weight by ~lr,
    and a wider layer sums more of them). Muon's LR needs no such scaling: its update is normalised per matrix."""
    return 6e-3 * (256 / n_embd) ** 0.5


def model_for_depth(depth: int, vocab_size: int, seq_len: int) -> GPTConfig:
    """Width 64 * depth in heads of 128 (nanochat's), or of 64 where the width is an odd multiple of 64. At the
    tiny preset 2 heads of 128 beat 4 of 64 per token (val bpb 2.093 vs 2.106 after 200 steps) and per second
    (5% faster steps: half the softmax work; docs/benchmarks.md)."""
    n_embd = 64 * depth
    n_head = n_embd // 128 if n_embd % 128 == 0 else n_embd // 64
    return GPTConfig(vocab_size=vocab_size, seq_len=seq_len, n_layer=depth, n_embd=n_embd, n_head=n_head,
                     n_kv_head=n_head)


# depth, vocab, seq_len, then per-section fields. CPU presets keep measured batches: tiny's 4,096 tokens a step learned
# more per token than twice that, where Power Lines would give it 16x more; its 512-token context holds a document or
# search passages with a question and answer (SFT), at ~30% more time per token than 256. GPU presets derive batch
# and steps from the depth (batch_tokens=-1, steps=0): d12 2^19 x 2,205, d20 2^20 x 4,810, on any number of processes.
# ~18% of tiny's training characters, a rounding error at d12's. The directory pages (2%) are what few-shot learning
# is learnt from: tiny's attribute family 0.22-0.26 -> 0.49-0.54 with 5 shots, SFT and chat figures within two
# pretraining seeds' spread (docs/benchmarks.md).
SYNTHETIC = dict(facts=256, directory_pages=63, copy_docs=4000)
PRESETS: dict[str, dict] = {
    "micro": dict(depth=1, vocab=512, seq_len=128, model=dict(n_embd=64, n_head=2, n_kv_head=2),
                  data=dict(max_docs=300, facts=16),  # no copy pages: a 1-layer model learns no copying from them
                  pretrain=dict(steps=40, batch_size=8, eval_every=20, eval_tokens=4096, ckpt_every=20,
                                warmup_steps=5, lr=1e-2),
                  sft=dict(mixture="identity:40,arithmetic:40", steps=20, batch_size=8, max_len=128, lr=3e-3),
                  probe=dict(questions=24, samples=2, steps=3, eval_examples=8),
                  rl=dict(steps=2, prompts=2, group=4, max_tokens=16, train_examples=64, eval_examples=32),
                  reward=dict(pairs=48, steps=10, batch_size=8), dpo=dict(pairs=32, steps=4, batch_size=4),
                  distill=dict(examples=16)),
    # no QK-norm at this size: 6% faster CPU steps for 0.0065 bpb per token after 300 steps (1.9430 vs 1.9365),
    # so better per second (docs/benchmarks.md); it exports as Llama. The GPU presets keep it (Qwen3).
    "tiny": dict(depth=4, vocab=4096, seq_len=512, model=dict(qk_norm=False), pretrain=dict(batch_size=8, compile=True),
                 data=SYNTHETIC,
                 sft=dict(max_len=512, steps=200), eval=dict(chat_examples=40),
                 # countdown, not the calculator: RL raised the calculator's practice phrasings 0.26 -> 0.56 and its
                 # held-out ones not at all (the operator of an unseen wording), countdown's held-out sets by ~10
                 # points. No format reward: answers go through python, not <think>. Half the prompts from other
                 # tasks keeps those up (with 300 each harmful refusal fell 0.80 -> 0.05). 75 steps: ~74 fit the 3
                 # minutes (held-out gain over 3 seeds 11.3 vs 60 steps' 9.4). docs/benchmarks.md
                 rl=dict(task="countdown", steps=75, group=16, temperature=0.8, format_weight=0.0, max_minutes=3.0,
                         mix="identity:500,chat:500,safety:500,context:500,letters:500,facts:500,arithmetic:500")),
    "small": dict(depth=6, vocab=8192, seq_len=512, data=SYNTHETIC,
                  pretrain=dict(steps=3000, batch_size=16, compile=True),
                  sft=dict(steps=600, max_len=512)),
    "d12": dict(depth=12, vocab=32768, seq_len=1024, data=SYNTHETIC,
                pretrain=dict(steps=0, batch_size=32, batch_tokens=-1, compile=True,
                              eval_every=250, eval_tokens=1_048_576, ckpt_every=1000),
                sft=dict(steps=1000, batch_size=32, lr=3e-4, max_len=1024)),
    "d20": dict(depth=20, vocab=65536, seq_len=2048, data=SYNTHETIC,
                pretrain=dict(steps=0, batch_size=16, batch_tokens=-1, compile=True,
                              eval_every=250, eval_tokens=1_048_576, ckpt_every=1000),
                sft=dict(steps=1000, batch_size=16, lr=2e-4, max_len=2048)),
}


def make_config(preset: str = "tiny", depth: int | None = None) -> Config:
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    depth = depth or p["depth"]
    cfg = Config(preset=preset, depth=depth, tokenizer=TokenizerConfig(vocab_size=p["vocab"]),
                 model=model_for_depth(depth, p["vocab"], p["seq_len"]))
    if depth == p["depth"]:  # explicit widths belong to the preset's own depth
        cfg.model = dataclasses.replace(cfg.model, **p.get("model", {}))
    for f in dataclasses.fields(Config):
        if f.name != "model" and isinstance(p.get(f.name), dict):
            setattr(cfg, f.name, dataclasses.replace(getattr(cfg, f.name), **p[f.name]))
    return cfg


def _parse(value: str, typ):
    if typ is bool or typ == "bool":
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise UserError(f"expected a boolean, got {value!r}")
    return typ(value)


def apply_overrides(cfg: Config, overrides: dict[str, str]) -> Config:
    """Apply {"pretrain.steps": "100", ...}; sizes that depend on each other are re-validated."""
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if not name:
            raise UserError(f"override {key!r} must look like SECTION.FIELD (e.g. pretrain.steps)")
        sub = getattr(cfg, section, None)
        if sub is None or not dataclasses.is_dataclass(sub):
            raise UserError(f"unknown config section {section!r} in {key!r}")
        hints = typing.get_type_hints(type(sub))
        if name not in hints:
            raise UserError(f"unknown field {key!r}; {section} has: {', '.join(hints)}")
        try:
            setattr(cfg, section, dataclasses.replace(sub, **{name: _parse(value, hints[name])}))
        except ValueError as e:
            raise UserError(f"bad value for {key}: {e}") from None
    if cfg.model.vocab_size != cfg.tokenizer.vocab_size:
        cfg.model = dataclasses.replace(cfg.model, vocab_size=cfg.tokenizer.vocab_size)
    return cfg


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(d: dict) -> Config:
    """to_dict's inverse, for the config in a run's manifest. A run made by an older version still opens: a
    section or field it lacks takes its default, and one this version no longer has is dropped with a warning."""
    dropped: list[str] = []
    cfg = _from_dict(Config, json.loads(json.dumps(d)), "", dropped)
    if dropped:
        warnings.warn(f"the run's config has fields this version of chatforge no longer has; dropped: "
                      f"{', '.join(dropped)}", stacklevel=2)
    return cfg


def _from_dict(cls, d: dict, prefix: str, dropped: list[str]):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    dropped += [prefix + k for k in d if k not in names]
    kwargs = {k: _from_dict(hints[k], v, f"{prefix}{k}.", dropped) if dataclasses.is_dataclass(hints[k]) else v
              for k, v in d.items() if k in names}
    return cls(**kwargs)

