"""The inference engine: a KV cache with one row per request, continuous batching, sampling
controls, streamed text and the tool loop.

Requests join and leave between steps (continuous batching, Orca, OSDI '22): each owns a row of a
preallocated cache and its own position in it, so a new request is prefilled into a free row while
the others keep decoding, and a finished one frees its row at once. One decode step runs every
active row together: on a CPU a step is bound by streaming the weights, not by arithmetic, so 16
rows give 5-7x the tokens/s of one (docs/benchmarks.md).

The layers are model/gpt.py's own (`block`), run over its fused inference copy of the weights with
the engine's cache rows, per-row positions and kernels.

When the model closes a tool call (<|python_end|>, <|search_end|>), the runtime runs the tool and
forces <|output_start|> result <|output_end|> into that row, marked 0 in the request's mask (not
trained on: the model did not choose those tokens), then sampling goes on: the lecture's
"refreshing the working memory", nanochat's forced-token injection.
"""

import codecs
import dataclasses
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from chatforge.errors import UserError
from chatforge.model.gpt import GPT, Weights
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
            raise UserError(f"bad sampling value: {e}") from None
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
                raise UserError(msg)

    @classmethod
    def from_dict(cls, d: dict) -> "SamplingParams":
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(d) - known):
            raise UserError(f"unknown sampling parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)


@dataclass
class GenStats:
    prompt_tokens: int = 0
    new_tokens: int = 0  # sampled by the model
    tool_calls: int = 0
    ttft: float = 0.0  # seconds from submission to the first new token
    seconds: float = 0.0  # submission to finish
    stop_reason: str = ""  # "stop" (stop token or string) | "length" (max_tokens or the context) | "cancelled"

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


@dataclass(eq=False)  # a request is itself: == and `in` by identity
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
    events: deque["Event"] | None = None  # stream()'s queue, which step() fills with this request's events


@dataclass
class Event:
    """What one step added to one request: text (whole characters only) and the tokens behind it."""
    request: Request
    text: str
    tokens: list[int]
    forced: bool = False  # a tool output pasted in by the runtime
    done: bool = False


def filtered(p: SamplingParams) -> bool:
    return bool(p.top_k or p.top_p < 1 or p.min_p)


def sample_token(logits: torch.Tensor, p: SamplingParams, generator: torch.Generator | None) -> int:
    """One token from a row of logits (already repetition-penalised) with temperature > 0, after top-k, top-p and
    min-p (Engine._sample draws the rows without them together)."""
    logits, order = (logits / p.temperature).sort(descending=True)
    if p.top_k:
        logits[p.top_k :] = float("-inf")
    probs = torch.softmax(logits, -1)
    if p.top_p < 1:  # drop a token once the more likely ones already hold top_p (the top one always stays)
        probs[probs.cumsum(-1) - probs >= p.top_p] = 0
    if p.min_p:
        probs[probs < p.min_p * probs[0]] = 0
    return int(order[draw(probs[None], [generator])[0]])


def draw(probs: torch.Tensor, generators: list[torch.Generator | None]) -> list[int]:
    """An index per row of (n, V) unnormalised probabilities, each row's uniform from its own generator, by
    inverting the cumulative sums: one batched pass instead of torch.multinomial per row (116 us a 4,096-token row).
    In float64, so that u x total stays below the total and a token of probability 0 is never drawn."""
    cdf = probs.double().cumsum(-1)
    u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64, device=probs.device) for g in generators])
    return torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0].tolist()


class Engine:
    """Serve many requests from one model: `submit` them, then `step` (or `run`, `stream`) until done.
    The tokenizer is needed for text, stop strings and tools; `tools.run(name, text) -> str` runs a call.

    `step()` is the one scheduler: it advances every request by a token and hands each event to its
    request. `run()` yields every event of the steps it makes (for a caller that drives the engine
    alone); `stream()` yields one request's events from its own queue and steps the engine
    only when that queue is empty, so any number of streams, generators interleaved in one thread (RL
    rollouts) or consumers in several threads (a server), each get all and only their own events.
    Threads: one lock serialises `submit`, `step`, `cancel` and `refresh_weights`; a stream may be
    consumed from any thread, and closing it early cancels its request."""

    def __init__(self, model: GPT, tok: Tokenizer | None = None, max_batch: int = 16, tools=None,
                 compile: bool = False):
        cfg = model.cfg
        self.model, self.tok, self.tools = model.eval(), tok, tools
        param = next(model.parameters())
        self.device = param.device
        self.max_len, self.max_batch = cfg.seq_len, max_batch
        # One tensor per layer (not views of one big one): torch.compile updates them in place.
        shape = (max_batch, cfg.n_kv_head, self.max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=self.device, dtype=param.dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=self.device, dtype=param.dtype) for _ in range(cfg.n_layer)]
        self.logits = torch.zeros(max_batch, cfg.vocab_size, device=self.device)  # each row's next-token logits
        self.seen = torch.zeros(max_batch, cfg.vocab_size, dtype=torch.bool, device=self.device)  # for the penalty
        self.arange = torch.arange(self.max_len, device=self.device)
        self.rows = torch.arange(max_batch, device=self.device)[:, None]
        with torch.inference_mode():
            self.weights = model.weights().fused()
            # Passes over several rows (a batched step, a prefill) run their products on oneDNN, the weights
            # reordered once into its blocked layout (16 rows: the head 0.35 vs 0.54 ms on MKL); one row stays
            # on MKL's faster vector-matrix kernel. A second copy of the weights; compiled, Inductor picks its own.
            blocked = max_batch > 1 and not compile and onednn_ok(param)
            self.blocked = self._blocked(self.weights) if blocked else None
        # Compiling the decode step (opt-in) fuses the small ops around the products: 0.9-1.3x the eager step's
        # tokens/s at batch 1 for 15-48 s of compiling, which pays back only over many answers. Prefills stay eager.
        self.decode = torch.compile(self._forward, dynamic=True) if compile else self._forward
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # running[i] owns cache row i: rows stay contiguous, so views, not gathers
        self.pending: list[tuple[Request, list[int]]] = []  # tokens a step's tool calls add to the cache (_extend)
        self.next_id = 0
        self.lock = threading.Lock()
        self.tool_ids: dict[int, tuple[int, str]] = {}
        if tools is not None:
            if tok is None:
                raise ValueError("tools need the tokenizer")
            self.tool_ids = {tok.special(end): (tok.special(start), name) for end, (start, name) in TOOL_CALLS.items()}

    def submit(self, prompt: list[int], params: SamplingParams | None = None) -> Request:
        req = self._request(prompt, params)
        self._enqueue(req)
        return req

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def step(self) -> list[Event]:
        """Admit waiting requests into free rows (prefill), sample one token for every running
        request, run tools, then decode all the rows that continue in one batched forward pass.
        Each event also goes to its request's stream queue."""
        with self.lock, torch.inference_mode():
            events = self._step()
            for event in events:
                self._deliver(event)
        return events

    def run(self) -> Iterator[Event]:
        """Step until every submitted request is done."""
        while self.has_work():
            yield from self.step()

    def stream(self, prompt: list[int], params: SamplingParams | None = None) -> Iterator[Event]:
        """One request's events, all and only its own, the last one done (other requests advance alongside)."""
        req = self._request(prompt, params)
        req.events = deque()
        self._enqueue(req)
        try:
            while True:
                while req.events:
                    event = req.events.popleft()
                    yield event
                    if event.done:
                        return
                self.step()
        finally:  # the consumer stopped early: free the row
            if not req.done:
                self.cancel(req)

    def generate(self, prompts: list[list[int]], params: SamplingParams | None = None) -> list[Request]:
        """Run many prompts to the end, batched; the finished requests in prompt order."""
        reqs = [self.submit(p, params) for p in prompts]
        while not all(r.done for r in reqs):
            self.step()
        return reqs

    def cancel(self, req: Request) -> None:
        """End a request now: a waiting one leaves the queue, a running one frees its cache row at once (the
        rows after it move down). It finishes with stop_reason "cancelled", and its stream gets a done event."""
        with self.lock, torch.inference_mode():
            if req.done:
                return
            self.waiting = deque(r for r in self.waiting if r is not req)
            self._deliver(self._finish(req, "cancelled"))
            self._compact()

    def refresh_weights(self, model: GPT) -> None:
        """Copy the weights of `model` (this engine's model after an optimizer step, or another of the same
        config) into the engine's fused copies, in place: no new engine, no recompile. Requests in flight keep
        their rows; the keys and values already in their cache came from the old weights, and their next
        tokens attend to those (submit after refreshing for answers wholly of the new weights)."""
        if model.cfg != self.model.cfg:
            raise ValueError(f"refresh_weights needs a model of the same config: {model.cfg} != {self.model.cfg}")
        with self.lock, torch.inference_mode():
            fresh = model.weights().fused()
            copies = [(self.weights, fresh)] + ([(self.blocked, self._blocked(fresh))] if self.blocked else [])
            for mine, new in copies:
                for a, b in zip(mine.tensors(), new.tensors(), strict=True):
                    a.copy_(b)

    # -- internals --

    def _request(self, prompt: list[int], params: SamplingParams | None) -> Request:
        if not prompt:
            raise UserError("the prompt is empty")
        if len(prompt) >= self.max_len:
            raise UserError(f"the prompt has {len(prompt)} tokens; the model's context is {self.max_len}")
        if bad := [t for t in prompt if not 0 <= t < self.model.cfg.vocab_size]:
            raise UserError(f"token id {bad[0]} is outside the vocabulary (0..{self.model.cfg.vocab_size - 1})")
        params = params or SamplingParams()
        req = Request(-1, list(prompt), params, t0=time.perf_counter())
        req.stats.prompt_tokens = len(prompt)
        if params.seed is not None:
            req.generator = torch.Generator(device=self.device).manual_seed(params.seed)
        return req

    def _enqueue(self, req: Request) -> None:
        with self.lock:
            req.id, self.next_id = self.next_id, self.next_id + 1
            self.waiting.append(req)

    def _deliver(self, event: Event) -> None:
        if event.request.events is not None:
            event.request.events.append(event)

    def _blocked(self, weights: Weights) -> Weights:
        """The fused weights reordered for oneDNN's products of about max_batch rows (what Inductor's freezing
        pass does on CPU: the same two ops)."""
        def reorder(w: torch.Tensor) -> torch.Tensor:  # oneDNN takes nn.Linear's (out, in)
            return torch.ops.mkldnn._reorder_linear_weight(w.t().contiguous(), self.max_batch)

        return weights.map(reorder, onednn_linear)

    def _step(self) -> list[Event]:
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
        if pending := [(r, ids) for r, ids in self.pending if not r.done]:
            self._extend(pending)
        self.pending = []
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
        plain = [j for j, r in enumerate(reqs) if r.params.temperature > 0 and not filtered(r.params)]
        if plain:  # together: row by row, a bench/rl.py step (32 answers x 32 tokens) ran 1,024 softmax-cumsum rounds
            temps = torch.tensor([reqs[j].params.temperature for j in plain], device=logits.device)
            probs = torch.softmax(logits[plain] / temps[:, None].to(logits.dtype), -1)
            for j, t in zip(plain, draw(probs, [reqs[j].generator for j in plain]), strict=True):
                tokens[j] = t
        for j, r in enumerate(reqs):
            if r.params.temperature > 0 and filtered(r.params):
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
        if forced:  # the closing token and the output enter the cache (_extend); <|output_end|> goes with the batch
            self.pending.append((req, [token, *forced[:-1]]))
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
                self.logits[i] = self.logits[r.row]
                r.row = i
        self.running = keep

    def _prefill_prompts(self, reqs: list[Request]) -> None:
        """The prompts of newly admitted requests (consecutive rows) in one forward pass, right-padded
        to the longest: a pad sits past its row's length, where no query of that row looks (the mask)
        until the row's own next token overwrites it. A prompt admitted several times (an RL group, the API's
        `n`) runs once and its cache row is copied: a third of a tiny RL rollout's time was 8 copies' prefill."""
        unique = list(dict.fromkeys(tuple(r.prompt) for r in reqs))
        base, T = reqs[0].row, max(len(p) for p in unique)
        tokens = torch.tensor([list(p) + [0] * (T - len(p)) for p in unique], device=self.device)
        last = torch.tensor([len(p) - 1 for p in unique], device=self.device)
        logits = self._forward(tokens, base, 0, T, last)
        if len(unique) < len(reqs):
            src = torch.tensor([unique.index(tuple(r.prompt)) for r in reqs], device=self.device)
            for cache in (*self.k, *self.v):
                cache[base : base + len(reqs), :, :T] = cache[base : base + len(unique), :, :T][src]
            logits = logits[src]
        self.logits[base : base + len(reqs)] = logits
        for r in reqs:
            r.pos = len(r.prompt)

    def _extend(self, pending: list[tuple[Request, list[int]]]) -> None:
        """Tokens into the caches of rows anywhere in the batch (tool calls' outputs), all in one pass: each row's
        at its own positions, right-padded (a pad lands past its row's length, where no query looks until the
        row's own tokens overwrite it). A pass per call: 1.53 vs 1.18 s for a countdown rollout of 8 x 16 answers."""
        m, D, KV = self.model, self.model.cfg.head_dim, self.model.cfg.n_kv_head
        n, T = len(pending), max(len(ids) for _, ids in pending)
        tokens = torch.tensor([ids + [0] * (T - len(ids)) for _, ids in pending], device=self.device)
        rows = torch.tensor([r.row for r, _ in pending], device=self.device)
        # a pad past the context shares the last position (_tool_output leaves it free): written, never read
        pos = (torch.tensor([r.pos for r, _ in pending], device=self.device)[:, None] + self.arange[:T]).clamp(
            max=self.max_len - 1)
        span = int(pos.max()) + 1
        mask = self._mask(pos, span).unsqueeze(1)
        at = ((rows[:, None, None] * KV + self.arange[:KV, None]) * self.max_len + pos[:, None]).flatten()

        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            self.k[layer].view(-1, D).index_copy_(0, at, k.reshape(-1, D))
            self.v[layer].view(-1, D).index_copy_(0, at, v.reshape(-1, D))
            keys, values = self.k[layer][rows, :, :span], self.v[layer][rows, :, :span]
            return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)

        self._weights(n).hidden(tokens, m.rope_cos[pos].unsqueeze(1), m.rope_sin[pos].unsqueeze(1), attend)
        for r, ids in pending:
            r.pos += len(ids)

    def _forward(self, tokens: torch.Tensor, row: int, pos: int | torch.Tensor, span: int,
                 last: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits (n, V) after tokens (n, T) of cache rows row..row+n-1, attending to the
        first `span` positions; taken at column T-1, or last[i] per row. `pos` is where the tokens
        go: an int when every row writes positions pos..pos+T-1 (prefills, a lone row), else (n, 1)
        per-row positions for a decode step over rows of different lengths: what lets requests of
        different lengths share a batch. The layers are GPT.forward's (model/gpt.py's `block`)."""
        m = self.model
        n, T = tokens.shape
        D = m.cfg.head_dim
        mask, causal, at = None, False, None
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
            at = ((self.rows[row : row + n] * m.cfg.n_kv_head + self.arange[: m.cfg.n_kv_head]) * self.max_len
                  + pos).flatten()

        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            if isinstance(pos, int):
                self.k[layer][row : row + n, :, pos : pos + T] = k
                self.v[layer][row : row + n, :, pos : pos + T] = v
            else:
                self.k[layer].view(-1, D).index_copy_(0, at, k.reshape(-1, D))
                self.v[layer].view(-1, D).index_copy_(0, at, v.reshape(-1, D))
            keys, values = self.k[layer][row : row + n, :, :span], self.v[layer][row : row + n, :, :span]
            return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=causal, enable_gqa=True)

        w = self._weights(n)
        x = w.hidden(tokens, cos, sin, attend)
        return w.logits(x[:, -1] if last is None else x[self.rows[:n, 0], last])

    def _weights(self, rows: int) -> Weights:
        """The weights a pass over `rows` cache rows reads: oneDNN's blocked ones for several, MKL's for one."""
        return self.weights if self.blocked is None or rows == 1 else self.blocked

    def _mask(self, pos: torch.Tensor, span: int) -> torch.Tensor:
        """(..., T, span) additive: causal, and blind past each row's own length. Additive, not
        boolean: SDPA's CPU kernel runs 1.3-2x faster with a float mask at these shapes."""
        return torch.where(self.arange[:span] <= pos[..., None], 0.0, float("-inf")).to(self.k[0].dtype)


def onednn_ok(param: torch.Tensor) -> bool:
    """The oneDNN path needs fp32 CPU weights and Inductor's two private mkldnn ops, which a torch build
    without them (or a future one that renames them) lacks: then every product stays on MKL."""
    return (param.is_cpu and param.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and all(hasattr(torch.ops.mkldnn, op) for op in ("_reorder_linear_weight", "_linear_pointwise")))


def onednn_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x @ w for w reordered by Engine._blocked."""
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
