"""The inference engine: a KV cache with one row per request, continuous batching, sampling
controls, streamed text and the tool loop.

Requests join and leave between steps (continuous batching, Orca, OSDI '22): each owns a row of a
preallocated cache and its own position in it, so a new request is prefilled into a free row while
the others keep decoding, and a finished one frees its row at once. One decode step runs every
active row together; at the sizes this runs on a CPU a one-row step is bound by streaming the
weights and by per-op overhead, not arithmetic, so a 16-row step costs 2.0-3.8x one row (more as the
rows' caches grow): 4.2-8x the throughput (docs/benchmarks.md).

When the model closes a tool call (<|python_end|>, <|search_end|>), the runtime runs the tool and
forces <|output_start|> result <|output_end|> into that row, marked 0 in the request's mask (not
trained on: the model did not choose those tokens), then sampling goes on: the lecture's
"refreshing the working memory", nanochat's forced-token injection.
"""

import codecs
import dataclasses
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from chatforge.model.gpt import GPT, apply_rope
from chatforge.tokenizer.bpe import Tokenizer

# closing token -> (opening token, tool name)
TOOL_CALLS = {"<|python_end|>": ("<|python_start|>", "python"), "<|search_end|>": ("<|search_start|>", "search")}


@dataclass
class SamplingParams:
    """How one request samples. The logits pass, in order: repetition penalty, temperature, top-k,
    top-p, min-p (the order of HF's logits processors, so settings mean the same as there)."""
    max_tokens: int = 256  # tokens the model samples (tool outputs the runtime pastes in do not count)
    temperature: float = 0.8  # 0: greedy
    top_k: int = 0  # keep the k most likely tokens; 0: off
    top_p: float = 1.0  # keep the smallest set with this much probability (Holtzman et al., 2019); 1: off
    min_p: float = 0.0  # drop tokens below min_p x the top token's probability (Nguyen et al., 2024); 0: off
    repetition_penalty: float = 1.0  # CTRL (Keskar et al., 2019): seen tokens' logits /p if > 0, *p if < 0
    seed: int | None = None  # per request, so a seeded answer does not depend on what else is in the batch
    stop: tuple[str, ...] = ()  # the text is cut right before the first of these strings
    stop_ids: tuple[int, ...] = ()  # generation ends at these tokens; they are not part of the output
    logprobs: bool = False  # record the model's log-probability of each sampled token

    def __post_init__(self) -> None:
        try:
            self.max_tokens, self.top_k = int(self.max_tokens), int(self.top_k)
            self.temperature, self.top_p = float(self.temperature), float(self.top_p)
            self.min_p, self.repetition_penalty = float(self.min_p), float(self.repetition_penalty)
            self.seed = None if self.seed is None else int(self.seed)
        except (TypeError, ValueError) as e:
            raise ValueError(f"bad sampling value: {e}") from None
        self.stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        self.stop_ids = tuple(int(i) for i in self.stop_ids)
        checks = [(self.max_tokens >= 1, f"max_tokens must be >= 1, got {self.max_tokens}"),
                  (self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}"),
                  (self.top_k >= 0, f"top_k must be >= 0 (0: off), got {self.top_k}"),
                  (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
                  (0 <= self.min_p < 1, f"min_p must be in [0, 1), got {self.min_p}"),
                  (self.repetition_penalty > 0, f"repetition_penalty must be > 0, got {self.repetition_penalty}"),
                  (all(isinstance(s, str) and s for s in self.stop), f"stop strings must be non-empty: {self.stop}")]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    @classmethod
    def from_dict(cls, d: dict) -> "SamplingParams":
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(d) - known):
            raise ValueError(f"unknown sampling parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)


@dataclass
class GenStats:
    prompt_tokens: int = 0
    new_tokens: int = 0  # sampled by the model
    tool_calls: int = 0
    ttft: float = 0.0  # seconds from submission to the first new token
    seconds: float = 0.0  # submission to finish
    stop_reason: str = ""  # "stop" (stop token or string) | "length" (max_tokens or the context)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


@dataclass
class Request:
    id: int
    prompt: list[int]
    params: SamplingParams
    tokens: list[int] = field(default_factory=list)  # new tokens: sampled ones and forced tool outputs
    mask: list[int] = field(default_factory=list)  # 1: sampled by the model; 0: forced by the runtime
    logprobs: list[float] = field(default_factory=list)  # with params.logprobs; 0.0 for forced tokens
    text: str = ""  # the new tokens as text, cut at a stop string
    stats: GenStats = field(default_factory=GenStats)
    done: bool = False
    row: int = -1  # cache row while running
    pos: int = 0  # positions of this row's cache that are filled
    emitted: int = 0  # characters of `text` already handed out in events
    t0: float = 0.0
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    generator: torch.Generator | None = None


@dataclass
class Event:
    """What one step added to one request: text (whole characters only) and the tokens behind it."""
    request: Request
    text: str
    tokens: list[int]
    forced: bool = False  # a tool output pasted in by the runtime
    done: bool = False


def sample_token(logits: torch.Tensor, p: SamplingParams, generator: torch.Generator | None) -> int:
    """One token from a row of logits (already repetition-penalised) with temperature > 0."""
    logits = logits / p.temperature
    if not (p.top_k or p.top_p < 1 or p.min_p):
        return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))
    logits, order = logits.sort(descending=True)
    if p.top_k:
        logits[p.top_k :] = float("-inf")
    probs = torch.softmax(logits, -1)
    if p.top_p < 1:  # drop a token once the more likely ones already hold top_p (the top one always stays)
        probs[probs.cumsum(-1) - probs >= p.top_p] = 0
    if p.min_p:
        probs[probs < p.min_p * probs[0]] = 0
    return int(order[torch.multinomial(probs, 1, generator=generator)])


class Engine:
    """Serve many requests from one model: `submit` them, then `step` (or `run`, `stream`) until done.
    The tokenizer is needed for text, stop strings and tools; `tools.run(name, text) -> str` runs a call."""

    def __init__(self, model: GPT, tok: Tokenizer | None = None, max_batch: int = 16, tools=None,
                 compile: bool = False):
        cfg = model.cfg
        self.model, self.tok, self.tools = model.eval(), tok, tools
        param = next(model.parameters())
        self.device = param.device
        self.max_len = cfg.seq_len
        # One tensor per layer (not views of one big one): torch.compile updates them in place.
        shape = (max_batch, cfg.n_kv_head, self.max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=self.device, dtype=param.dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=self.device, dtype=param.dtype) for _ in range(cfg.n_layer)]
        self.logits = torch.zeros(max_batch, cfg.vocab_size, device=self.device)  # each row's next-token logits
        self.seen = torch.zeros(max_batch, cfg.vocab_size, dtype=torch.bool, device=self.device)  # for the penalty
        self.arange = torch.arange(self.max_len, device=self.device)
        self.rows = torch.arange(max_batch, device=self.device)[:, None]
        with torch.inference_mode():
            self.packed, self.head = pack_weights(model)
            # A forward pass over several cache rows (a batched step or prefill) runs its products on
            # oneDNN, with the weights reordered once into its blocked layout: at 16 rows the head's
            # product takes 0.35 ms instead of MKL's 0.54-0.61 (gate_up 0.13 vs 0.17; hot cache, 1 thread),
            # and bench/inference.py's 16 requests together 1.55-1.59 s of CPU instead of 1.82-1.91
            # (medians of 5-8 interleaved runs). One row (batch 1, its prefills too) stays on MKL, whose
            # vector-matrix kernel beats oneDNN's there (256 x 256: 6-8 us vs 19-24). The price is a
            # second copy of the weights, so not for an engine of one row; compiled, Inductor picks its
            # own kernels (it lowers these two ops only for frozen weights).
            blocked = max_batch > 1 and not compile and onednn_ok(param)
            self.blocked = block_weights(self.packed, self.head, max_batch) if blocked else None
        # The decode step, optionally compiled (one dynamic graph for batch sizes >= 2, one for batch 1;
        # 15-48 s to compile on 2 CPU cores, 7-8 s from Inductor's disk cache): Inductor fuses the small
        # ops around the matrix products, 0.9-1.3x the eager step's tokens/s at batch 1 (docs/benchmarks.md),
        # so it is opt-in: it pays back only over many answers. Prefills stay eager.
        self.decode = torch.compile(self._forward, dynamic=True) if compile else self._forward
        self.max_batch = max_batch
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # running[i] owns cache row i: rows stay contiguous, so views, not gathers
        self.next_id = 0
        self.tool_ids: dict[int, tuple[int, str]] = {}
        if tools is not None:
            if tok is None:
                raise ValueError("tools need the tokenizer")
            self.tool_ids = {tok.special(end): (tok.special(start), name) for end, (start, name) in TOOL_CALLS.items()}

    def submit(self, prompt: list[int], params: SamplingParams | None = None) -> Request:
        if not prompt:
            raise ValueError("the prompt is empty")
        if len(prompt) >= self.max_len:
            raise ValueError(f"the prompt has {len(prompt)} tokens; the model's context is {self.max_len}")
        if bad := [t for t in prompt if not 0 <= t < self.model.cfg.vocab_size]:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary (0..{self.model.cfg.vocab_size - 1})")
        params = params or SamplingParams()
        req = Request(self.next_id, list(prompt), params, t0=time.perf_counter())
        req.stats.prompt_tokens = len(prompt)
        if params.seed is not None:
            req.generator = torch.Generator(device=self.device).manual_seed(params.seed)
        self.next_id += 1
        self.waiting.append(req)
        return req

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    @torch.inference_mode()
    def step(self) -> list[Event]:
        """Admit waiting requests into free rows (prefill), sample one token for every running
        request, run tools, then decode all the rows that continue in one batched forward pass."""
        admitted = []
        while self.waiting and len(self.running) + len(admitted) < self.max_batch:
            req = self.waiting.popleft()
            req.row = len(self.running) + len(admitted)
            if req.params.repetition_penalty != 1:
                self.seen[req.row] = False
                self.seen[req.row, req.prompt] = True
            admitted.append(req)
        if admitted:
            self._prefill_prompts(admitted)
            self.running += admitted
        if not self.running:
            return []
        events = []
        for req, token, logprob in zip(self.running, *self._sample(self.running), strict=True):
            events += self._accept(req, token, logprob)
        self._compact()
        if self.running:  # every running row has exactly one token (its last) not yet in the cache
            n = len(self.running)
            tokens = torch.tensor([[r.tokens[-1]] for r in self.running], device=self.device)
            pos = [r.pos for r in self.running]
            at = pos[0] if n == 1 else torch.tensor(pos, device=self.device)[:, None]
            self.logits[:n] = self.decode(tokens, 0, at, max(pos) + 1)
            for r in self.running:
                r.pos += 1
        return events

    def run(self) -> Iterator[Event]:
        """Step until every submitted request is done."""
        while self.has_work():
            yield from self.step()

    def stream(self, prompt: list[int], params: SamplingParams | None = None) -> Iterator[Event]:
        """One request's events (other submitted requests advance alongside)."""
        req = self.submit(prompt, params)
        while not req.done:
            yield from (e for e in self.step() if e.request is req)

    def generate(self, prompts: list[list[int]], params: SamplingParams | None = None) -> list[Request]:
        """Run many prompts to the end, batched; the finished requests in prompt order."""
        reqs = [self.submit(p, params) for p in prompts]
        for _ in self.run():
            pass
        return reqs

    # -- internals --

    def _sample(self, reqs: list[Request]) -> tuple[list[int], list[float]]:
        logits = self.logits[: len(reqs)]
        if any(r.params.repetition_penalty != 1 for r in reqs):
            logits = logits.clone()  # the penalty edits rows in place
        logprobs = [0.0] * len(reqs)
        want_logprobs = any(r.params.logprobs for r in reqs)
        raw = F.log_softmax(logits, -1) if want_logprobs else None
        for j, r in enumerate(reqs):
            if (penalty := r.params.repetition_penalty) != 1:
                row, seen = logits[j], self.seen[r.row]
                logits[j] = torch.where(seen, torch.where(row > 0, row / penalty, row * penalty), row)
        tokens = logits.argmax(-1).tolist()  # greedy rows: one op for the whole batch
        for j, r in enumerate(reqs):
            if r.params.temperature > 0:
                tokens[j] = sample_token(logits[j], r.params, r.generator)
            if raw is not None and r.params.logprobs:
                logprobs[j] = float(raw[j, tokens[j]])
        return tokens, logprobs

    def _accept(self, req: Request, token: int, logprob: float) -> list[Event]:
        """Take a sampled token: stop, or append it (and a tool's output)."""
        p, stats = req.params, req.stats
        if stats.new_tokens == 0:
            stats.ttft = time.perf_counter() - req.t0
        if token in p.stop_ids:
            return [self._finish(req, "stop")]
        req.tokens.append(token)
        req.mask.append(1)
        req.logprobs.append(logprob)
        stats.new_tokens += 1
        if p.repetition_penalty != 1:
            self.seen[req.row, token] = True
        events = [self._emit(req, [token])]
        if req.done:  # a stop string
            return events
        forced = self._tool_output(req, token) if token in self.tool_ids else []
        if forced:  # the closing token and the output enter the cache; <|output_end|> goes with the batch
            self._prefill(req, [token, *forced[:-1]])
            req.tokens += forced
            req.mask += [0] * len(forced)
            req.logprobs += [0.0] * len(forced)
            events.append(self._emit(req, forced, forced=True))
        if req.done:
            return events
        if stats.new_tokens >= p.max_tokens or len(req.prompt) + len(req.tokens) >= self.max_len:
            events.append(self._finish(req, "length"))
        return events

    def _tool_output(self, req: Request, token: int) -> list[int]:
        """Run the call that `token` closes; the forced tokens <|output_start|> result <|output_end|>,
        the result cut to fit the context (nothing if not even the markers fit)."""
        start, name = self.tool_ids[token]
        opened = max((i for i, t in enumerate(req.tokens) if t == start), default=None)
        if opened is None:
            return []  # a closing token without its opening one: plain text, nothing to run
        room = self.max_len - len(req.prompt) - len(req.tokens) - 3  # markers + a position to sample into
        if room < 0:
            return []
        result = self.tools.run(name, self.tok.decode(req.tokens[opened + 1 : -1]))
        req.stats.tool_calls += 1
        out_start, out_end = self.tok.special("<|output_start|>"), self.tok.special("<|output_end|>")
        return [out_start, *self.tok.encode(result)[:room], out_end]

    def _emit(self, req: Request, ids: list[int], forced: bool = False) -> Event:
        """Decode `ids` onto the request's text; hand out what cannot be the start of a stop string."""
        if self.tok is None:
            return Event(req, "", ids, forced)
        before = len(req.text)
        req.text += "".join(req.decoder.decode(self.tok.token_bytes(i)) for i in ids)
        stop = req.params.stop
        cuts = [at for s in stop if (at := req.text.find(s, max(0, before - len(s) + 1))) >= 0]
        if cuts:
            req.text = req.text[: min(cuts)]
            return self._finish(req, "stop", ids, forced, cut=True)
        end = len(req.text) - held_back(req.text, stop)
        text, req.emitted = req.text[req.emitted : end], end
        return Event(req, text, ids, forced)

    def _finish(self, req: Request, reason: str, ids: list[int] | None = None, forced: bool = False,
                cut: bool = False) -> Event:
        if not cut:  # a cut at a stop string drops the decoder's pending bytes with the rest
            req.text += req.decoder.decode(b"", final=True)
        req.done = True
        req.stats.stop_reason = reason
        req.stats.seconds = time.perf_counter() - req.t0
        text, req.emitted = req.text[req.emitted :], len(req.text)
        return Event(req, text, ids or [], forced, done=True)

    def _compact(self) -> None:
        """Drop finished requests; later rows move down so the running ones keep rows 0..n-1 (a copy
        per finished request instead of a gather of every row's cache at every step)."""
        keep = [r for r in self.running if not r.done]
        for i, r in enumerate(keep):
            if r.row != i:  # r.row > i, and rows below i are settled: a copy never clobbers a live row
                for k, v in zip(self.k, self.v, strict=True):
                    k[i, :, : r.pos] = k[r.row, :, : r.pos]
                    v[i, :, : r.pos] = v[r.row, :, : r.pos]
                self.seen[i] = self.seen[r.row]
                r.row = i
        self.running = keep

    def _prefill_prompts(self, reqs: list[Request]) -> None:
        """The prompts of newly admitted requests (consecutive rows) in one forward pass, right-padded
        to the longest: a pad sits past its row's length, where no query of that row looks (the mask)
        until the row's own next token overwrites it."""
        T = max(len(r.prompt) for r in reqs)
        tokens = torch.tensor([r.prompt + [0] * (T - len(r.prompt)) for r in reqs], device=self.device)
        last = torch.tensor([len(r.prompt) - 1 for r in reqs], device=self.device)
        self.logits[reqs[0].row : reqs[0].row + len(reqs)] = self._forward(tokens, reqs[0].row, 0, T, last)
        for r in reqs:
            r.pos = len(r.prompt)

    def _prefill(self, req: Request, ids: list[int]) -> torch.Tensor:
        logits = self._forward(torch.tensor([ids], device=self.device), req.row, req.pos, req.pos + len(ids))[0]
        req.pos += len(ids)
        return logits

    def _forward(self, tokens: torch.Tensor, row: int, pos: int | torch.Tensor, span: int,
                 last: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits (n, V) after tokens (n, T) of cache rows row..row+n-1, attending to the
        first `span` positions; taken at column T-1, or last[i] per row. `pos` is where the tokens
        go: an int when every row writes positions pos..pos+T-1 (prefills, a lone row), else (n, 1)
        per-row positions for a decode step over rows of different lengths: what lets requests of
        different lengths share a batch. The math is GPT.forward's on the packed weights; tests hold
        the two to the same logits."""
        m, cfg = self.model, self.model.cfg
        n, T = tokens.shape
        H, KV, D, eps = cfg.n_head, cfg.n_kv_head, cfg.head_dim, cfg.norm_eps
        mask, causal = None, False
        if isinstance(pos, int):
            # Positions shared by all rows: slices of the rope tables and the cache (views and copies,
            # not gathers and index_put), and no mask at all for a prompt from 0 or a single new token.
            cos, sin = m.rope_cos[pos : pos + T], m.rope_sin[pos : pos + T]
            causal = T > 1 and pos == 0
            if T > 1 and pos > 0:
                mask = self._mask(pos + self.arange[:T], span)
        else:
            cos, sin = m.rope_cos[pos].unsqueeze(1), m.rope_sin[pos].unsqueeze(1)  # (n, 1, T, head_dim)
            mask = self._mask(pos, span).unsqueeze(1)
            # one new position per row: where each (row, kv head) vector goes in a layer's cache seen as
            # (rows * kv heads * positions, head_dim); index_copy_ is ~1.6x faster than index_put here
            at = ((self.rows[row : row + n] * KV + self.arange[:KV]) * self.max_len + pos).flatten()
        x = m.embed_tokens(tokens)
        if self.blocked is None or n == 1:
            mm, layers, head = torch.matmul, self.packed, self.head
        else:
            mm, (layers, head) = onednn_linear, self.blocked
        for i, w in enumerate(layers):
            # queries and keys side by side (H + KV heads): one norm and one RoPE for both
            qk, v = mm(F.rms_norm(x, x.shape[-1:], None, eps), w["qkv"]).split([(H + KV) * D, KV * D], -1)
            qk = qk.view(n, T, H + KV, D)
            if cfg.qk_norm:
                qk = F.rms_norm(qk, (D,), eps=eps) * w["qk_norm"]
            qk = qk.transpose(1, 2)
            q, k = apply_rope(qk, cos, sin).split([H, KV], 1)
            v = v.view(n, T, KV, D)
            if isinstance(pos, int):
                self.k[i][row : row + n, :, pos : pos + T] = k
                self.v[i][row : row + n, :, pos : pos + T] = v.transpose(1, 2)
            else:
                self.k[i].view(-1, D).index_copy_(0, at, k.reshape(-1, D))
                self.v[i].view(-1, D).index_copy_(0, at, v.reshape(-1, D))
            keys, values = self.k[i][row : row + n, :, :span], self.v[i][row : row + n, :, :span]
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=causal, enable_gqa=True)
            x = x + mm(y.transpose(1, 2).reshape(n, T, H * D), w["o"])
            gate, up = mm(F.rms_norm(x, x.shape[-1:], None, eps), w["gate_up"]).chunk(2, -1)
            x = x + mm(F.silu(gate) * up, w["down"])
        x = x[:, -1] if last is None else x[self.rows[:n, 0], last]
        return mm(F.rms_norm(x, x.shape[-1:], None, eps), head).float()

    def _mask(self, pos: torch.Tensor, span: int) -> torch.Tensor:
        """(..., T, span) additive: causal, and blind past each row's own length. Additive, not
        boolean: SDPA's CPU kernel runs 1.3-2x faster with a float mask at these shapes."""
        return torch.where(self.arange[:span] <= pos[..., None], 0.0, float("-inf")).to(self.k[0].dtype)


def pack_weights(model: GPT) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
    """Per layer: q/k/v fused into one matrix, gate/up into another, all stored transposed (in, out),
    with the RMSNorm weight before each folded into its rows (norm(x) * g @ W = norm(x) @ diag(g) W);
    the q and k norm weights side by side per head; and the transposed head, the final norm folded
    in. At batch 1 a step is a chain of small ops bound by per-op overhead: fusing cuts the matrix
    products from 7 to 4 per layer and the norm + RoPE calls from 4 to 2, measured 1.3-1.5x and
    another 1.1x decode tokens/s (tiny preset, 1 thread). A snapshot: build a new Engine after
    changing the model's weights."""
    cfg, layers = model.cfg, []
    for block in model.layers:
        a, mlp = block.self_attn, block.mlp
        g1, g2 = block.input_layernorm.weight[:, None], block.post_attention_layernorm.weight[:, None]
        w = {"qkv": torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).t().mul(g1).contiguous(),
             "o": a.o_proj.weight.t().contiguous(),
             "gate_up": torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).t().mul(g2).contiguous(),
             "down": mlp.down_proj.weight.t().contiguous()}
        if cfg.qk_norm:
            w["qk_norm"] = torch.cat([a.q_norm.weight.expand(cfg.n_head, -1),
                                      a.k_norm.weight.expand(cfg.n_kv_head, -1)])
        layers.append(w)
    return layers, model.lm_head.weight.t().mul(model.norm.weight[:, None]).contiguous()


def onednn_ok(param: torch.Tensor) -> bool:
    """The oneDNN path needs fp32 CPU weights and Inductor's two private mkldnn ops, which a torch build
    without them (or a future one that renames them) lacks: then every product stays on MKL."""
    return (param.is_cpu and param.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and all(hasattr(torch.ops.mkldnn, op) for op in ("_reorder_linear_weight", "_linear_pointwise")))


def block_weights(layers: list[dict[str, torch.Tensor]], head: torch.Tensor,
                  rows: int) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
    """pack_weights' matrices reordered for oneDNN's products of about `rows` rows (what Inductor's
    freezing pass does on CPU: the same two ops)."""
    def reorder(w: torch.Tensor) -> torch.Tensor:  # oneDNN takes nn.Linear's (out, in)
        return torch.ops.mkldnn._reorder_linear_weight(w.t().contiguous(), rows)

    return [{k: t if k == "qk_norm" else reorder(t) for k, t in w.items()} for w in layers], reorder(head)


def onednn_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x @ w for w from block_weights."""
    return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that could still grow into a stop string."""
    for n in range(min(len(text), max((len(s) for s in stops), default=1) - 1), 0, -1):
        if any(s.startswith(text[-n:]) for s in stops):
            return n
    return 0


def generate(model: GPT, prompt: list[int], max_new_tokens: int = 256, temperature: float = 0.8, top_k: int = 50,
             stop_ids: tuple[int, ...] = (), seed: int | None = None,
             stats: GenStats | None = None) -> Iterator[int]:
    """One prompt, no tokenizer: yield the new token ids (a stop id ends generation and is not yielded)."""
    params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_k=top_k, stop_ids=stop_ids,
                            seed=seed)
    engine = Engine(model, max_batch=1)
    req = engine.submit(prompt, params)
    for event in engine.run():
        yield from event.tokens
    if stats is not None:
        vars(stats).update(vars(req.stats))
