"""The Transformer: a Llama/Qwen3-family decoder, small enough to read in one sitting.

Pre-norm RMSNorm, rotary embeddings in HF's rotate-half layout, optional QK-norm (Qwen3),
SwiGLU MLP, grouped-query attention, no biases, untied embeddings. Staying inside this family
means a checkpoint maps 1:1 onto `LlamaForCausalLM` / `Qwen3ForCausalLM` and llama.cpp.

The layer is written once, `block`, over a `Weights` view of the model: its modules' own parameters for
training (`GPT.weights`: autograd, torch.compile), or the fused copy the engine runs with its own KV-cache
rows and kernels (`Weights.fused`, infer/engine.py). Changing the layer changes both.
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from chatforge.config import GPTConfig

HIDDEN_ACT = "silu"  # the MLP gate's activation (SwiGLU) by its transformers name, which model/hf.py writes and checks

# attend(layer, q, k, v) -> y: attention over (B, heads, T, head_dim), with whatever cache the caller keeps
Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def rope_tables(cfg: GPTConfig, length: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin per position in HF Llama's rotate-half layout, the sin's first half negated: HF's
    x * cos + cat(-x2, x1) * sin is then x * cos + roll(x, D/2) * sin (see apply_rope)."""
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, device=device).float() / cfg.head_dim))
    freqs = torch.outer(torch.arange(length, device=device).float(), inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin() * torch.cat([-torch.ones_like(inv_freq), torch.ones_like(inv_freq)])


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embeddings with rope_tables' signed sin: 3 ops instead of rotate-half's 6 (chunk, neg, cat),
    8 vs 17 us a call in the engine's eager decode step."""
    return torch.addcmul(x * cos, x.roll(x.size(-1) // 2, -1), sin)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal self-attention over (B, heads, T, head_dim), keys and values possibly with fewer heads (GQA).
    On CPU under torch.compile the plain formula, which Inductor fuses into one softmax kernel between two
    batched matmuls (39 vs 66 ms forward + backward per tiny layer for the CPU flash kernel); elsewhere flash SDPA."""
    T = q.size(-2)
    if not (q.is_cpu and torch.compiler.is_compiling() and T <= 512):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    pos = torch.arange(T, device=q.device)
    # the mask as a comparison of positions, which Inductor computes inside the softmax kernel: 8% faster
    # forward + backward than a materialised tril (2 heads of 128, one thread)
    return plain_attention(q, k, v, pos[:, None] >= pos)


def plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Attention as its formula, softmax(q k^T / sqrt(d)) v over the keys where `allowed` (broadcast to the scores;
    each query keeps at least one key), keys and values possibly with fewer heads (GQA). Where SDPA's CPU kernels
    are slower: under compile (fused into one softmax kernel) and for masked passes on CPU."""
    if k.size(1) != q.size(1):
        k, v = (t.repeat_interleave(q.size(1) // k.size(1), dim=1) for t in (k, v))
    scores = (q @ k.transpose(-1, -2)) * q.size(-1) ** -0.5
    return torch.softmax(torch.where(allowed, scores, float("-inf")), dim=-1) @ v


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension. No weight where it is folded into the next matrix (Weights.fused); a
    (heads, head_dim) weight for query and key heads side by side. The weight is cast to the activations' dtype:
    under bf16 autocast a float32 weight makes torch fall back from the fused kernel to the slow composite one."""
    if weight is not None and weight.dim() > 1:
        return F.rms_norm(x, x.shape[-1:], None, eps) * weight
    return F.rms_norm(x, x.shape[-1:], None if weight is None else weight.to(x.dtype), eps)


def project(x: torch.Tensor, mats: tuple[torch.Tensor, ...], linear, sizes: list[int]) -> list[torch.Tensor]:
    """x through matrices that read the same input: a product per matrix, or one product of them fused side by
    side (Weights.fused), split into outputs of the given widths (split_with_sizes: Tensor.split's Python
    wrapper costs more than the split at batch 1)."""
    if len(mats) > 1:
        return [linear(x, m) for m in mats]
    return linear(x, mats[0]).split_with_sizes(sizes, -1)


@dataclass
class BlockWeights:
    """One layer's weights as `block` reads them."""
    attn_norm: torch.Tensor | None  # None: folded into the matrices after it
    qkv: tuple[torch.Tensor, ...]  # q, k, v projections, or the three fused
    qk_norm: tuple[torch.Tensor, ...] | None  # QK-norm (Qwen3): q's and k's, or one for their heads side by side
    o: torch.Tensor
    mlp_norm: torch.Tensor | None
    mlp: tuple[torch.Tensor, ...]  # gate, up, or the two fused
    down: torch.Tensor


def block(x: torch.Tensor, w: BlockWeights, layer: int, cfg: GPTConfig, linear, cos: torch.Tensor,
          sin: torch.Tensor, attend: Attend) -> torch.Tensor:
    """One decoder layer: attention, then the MLP, each reading the RMS-normed residual stream and adding to it."""
    B, T, _ = x.shape
    H, KV, D, eps = cfg.n_head, cfg.n_kv_head, cfg.head_dim, cfg.norm_eps
    # queries and keys from their own matrices, or fused: H + KV heads side by side, one norm and one RoPE
    # for both (a decode step is a chain of small ops, 1.1x tokens/s)
    *qk, v = (t.view(B, T, -1, D) for t in project(rms_norm(x, w.attn_norm, eps), w.qkv, linear,
                                                       [(H + KV) * D, KV * D]))
    if w.qk_norm is not None:
        qk = [rms_norm(t, g, eps) for t, g in zip(qk, w.qk_norm, strict=True)]
    qk = [apply_rope(t.transpose(1, 2), cos, sin) for t in qk]
    q, k = qk if len(qk) == 2 else qk[0].split_with_sizes([H, KV], 1)
    y = attend(layer, q, k, v.transpose(1, 2))
    x = x + linear(y.transpose(1, 2).reshape(B, T, H * D), w.o)
    gate, up = project(rms_norm(x, w.mlp_norm, eps), w.mlp, linear, [cfg.ffn_dim, cfg.ffn_dim])
    return x + linear(F.silu(gate) * up, w.down)


@dataclass
class Weights:
    """A model's weights in the layout one forward pass reads, with the matrix product for that layout:
    `linear(x, matrix)`."""
    cfg: GPTConfig
    embed: torch.Tensor
    layers: list[BlockWeights]
    norm: torch.Tensor | None  # None: folded into the head
    head: torch.Tensor
    linear: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def hidden(self, idx: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: Attend) -> torch.Tensor:
        """The residual stream (B, T, n_embd) after every layer, for token ids (B, T) at the positions of cos/sin."""
        x = F.embedding(idx, self.embed)
        for i, w in enumerate(self.layers):
            x = block(x, w, i, self.cfg, self.linear, cos, sin, attend)
        return x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(rms_norm(x, self.norm, self.cfg.norm_eps), self.head).float()

    @torch.no_grad()
    def fused(self) -> "Weights":
        """A copy for inference, where a decode step is a chain of small ops bound by per-op overhead: the
        matrices that read the same input fused into one (q/k/v; gate/up) with the RMSNorm weight before them
        folded into their rows (norm(x) * g @ W = norm(x) @ diag(g) W), all (in, out) for torch.matmul.
        Fusing measured 1.3-1.5x decode tokens/s (tiny preset, 1 thread)."""
        def fuse(mats, g=None):  # left transposed, not contiguous, the step ran 1.3x slower
            w = torch.cat(mats).t()
            return (w if g is None else w * g[:, None]).contiguous()

        def heads(qk_norm):  # q's weight for each query head, then k's for each key head
            if qk_norm is None:
                return None
            q, k = qk_norm
            return (torch.cat([q.expand(self.cfg.n_head, -1), k.expand(self.cfg.n_kv_head, -1)]),)

        layers = [BlockWeights(None, (fuse(w.qkv, w.attn_norm),), heads(w.qk_norm), fuse([w.o]),
                               None, (fuse(w.mlp, w.mlp_norm),), fuse([w.down])) for w in self.layers]
        return Weights(self.cfg, self.embed.clone(), layers, None, fuse([self.head], self.norm), torch.matmul)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor], linear) -> "Weights":
        """These weights with every matrix of a product passed through `fn` (a kernel's own layout, read by
        `linear`); the embedding and the norm weights (the fields named *norm) are shared."""
        def convert(name, v):
            if name.endswith("norm"):
                return v
            return tuple(fn(t) for t in v) if isinstance(v, tuple) else fn(v)

        layers = [BlockWeights(**{k: convert(k, v) for k, v in vars(w).items()}) for w in self.layers]
        return dataclasses.replace(self, layers=layers, head=fn(self.head), linear=linear)

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor, in a fixed order."""
        out = [self.embed]
        for w in self.layers:
            for v in vars(w).values():
                out += v if isinstance(v, tuple) else [] if v is None else [v]
        return out + [t for t in (self.norm, self.head) if t is not None]


class KVCache:
    """Preallocated keys/values for all layers; `pos` is how many positions are filled."""

    def __init__(self, cfg: GPTConfig, batch_size: int, max_len: int, device=None, dtype=torch.float32):
        shape = (cfg.n_layer, batch_size, cfg.n_kv_head, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Store the new keys and values at `pos`; their queries see every position cached up to their own."""
        start, end = self.pos, self.pos + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache full: {start} + {k.size(2)} > {self.max_len} positions")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        k, v = self.k[layer, :, :, :end], self.v[layer, :, :, :end]
        if start == 0:
            return causal_attention(q, k, v)
        mask = torch.ones(q.size(2), end, dtype=torch.bool, device=q.device).tril(diagonal=start)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)


# The modules hold the parameters under the names HF's Llama/Qwen3 use (model/hf.py maps them); `block` computes.
class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.q_proj = nn.Linear(cfg.n_embd, cfg.n_head * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.n_embd, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.n_embd, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_head * cfg.head_dim, cfg.n_embd, bias=False)
        if cfg.qk_norm:
            self.q_norm = nn.RMSNorm(cfg.head_dim, eps=cfg.norm_eps)
            self.k_norm = nn.RMSNorm(cfg.head_dim, eps=cfg.norm_eps)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.n_embd, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.n_embd, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.n_embd, bias=False)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps)
        self.mlp = MLP(cfg)

    def weights(self) -> BlockWeights:
        a, mlp = self.self_attn, self.mlp
        qk_norm = (a.q_norm.weight, a.k_norm.weight) if hasattr(a, "q_norm") else None
        return BlockWeights(self.input_layernorm.weight, (a.q_proj.weight, a.k_proj.weight, a.v_proj.weight),
                            qk_norm, a.o_proj.weight, self.post_attention_layernorm.weight,
                            (mlp.gate_proj.weight, mlp.up_proj.weight), mlp.down_proj.weight)


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        cos, sin = rope_tables(cfg, cfg.seq_len)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # Output projections start at zero so every block begins as the identity (as in nanochat,
        # modded-nanogpt); the head starts small so the initial loss is ~ln(vocab).
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.zeros_(p)
            elif name == "embed_tokens.weight":
                nn.init.normal_(p, std=1.0)
            elif name == "lm_head.weight":
                nn.init.normal_(p, std=0.001)
            else:
                nn.init.normal_(p, std=p.size(1) ** -0.5)

    def weights(self) -> Weights:
        """The modules' own parameters, nn.Linear's (out, in), one product per matrix: what training differentiates."""
        return Weights(self.cfg, self.embed_tokens.weight, [b.weights() for b in self.layers], self.norm.weight,
                       self.lm_head.weight, F.linear)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None,
                reduction: str = "mean") -> torch.Tensor:
        """Logits (B, T, V) without targets; with targets (-1 = ignored) the cross-entropy loss."""
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.rope_cos.size(0):
            cos, sin = rope_tables(self.cfg, start + T, idx.device)
        else:
            cos, sin = self.rope_cos, self.rope_sin
        cos, sin = cos[start : start + T], sin[start : start + T]
        w = self.weights()
        if cache is None:
            logits = w.logits(w.hidden(idx, cos, sin, lambda layer, q, k, v: causal_attention(q, k, v)))
        else:
            logits = w.logits(w.hidden(idx, cos, sin, cache.attend))
            cache.pos += T
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1,
                               reduction=reduction)

    @torch.no_grad()
    def sample(self, prompt: list[int], max_new_tokens: int, temperature: float = 0.0, top_k: int = 50,
               seed: int = 0) -> list[int]:
        """A plain KV-cache sampling loop for looking at a model while it trains (greedy at temperature 0).
        Serving, batching and the full sampling controls are infer/engine.py's job."""
        device = self.embed_tokens.weight.device
        max_new_tokens = max(0, min(max_new_tokens, self.cfg.seq_len - len(prompt)))
        cache = KVCache(self.cfg, 1, len(prompt) + max_new_tokens, device, self.embed_tokens.weight.dtype)
        gen = torch.Generator(device).manual_seed(seed)
        idx, out = torch.tensor([prompt], device=device), []
        for _ in range(max_new_tokens):
            logits = self(idx, cache=cache)[0, -1]
            if temperature > 0:
                top = torch.topk(logits, min(top_k, logits.numel()))
                probs = torch.softmax(top.values / temperature, -1)
                token = top.indices[torch.multinomial(probs, 1, generator=gen)]
            else:
                token = logits.argmax().view(1)
            out.append(int(token))
            idx = token.view(1, 1)
        return out

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed_tokens.weight.numel() if non_embedding else n

    def matrix_params(self) -> int:
        """Parameters of the matrix products: every layer's matrices and the head (not the embedding, a lookup)."""
        return sum(p.numel() for name, p in self.named_parameters() if p.dim() == 2 and name != "embed_tokens.weight")

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6 per matmul weight (fwd+bwd) plus attention scores (PaLM appendix B)."""
        cfg = self.cfg
        return 6 * self.matrix_params() + 12 * cfg.n_layer * cfg.n_head * cfg.head_dim * cfg.seq_len


def scaling_params(cfg: GPTConfig) -> int:
    """GPT.matrix_params of a model of `cfg`, the count nanochat sizes its training horizon and batch by (the
    cleanest scaling laws); counted on the meta device, so it follows the layers as written and allocates nothing."""
    with torch.device("meta"):
        return GPT(cfg).matrix_params()
