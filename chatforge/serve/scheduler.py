"""The server's engines and the one thread that steps them.

Every client's request becomes a Job. One scheduler thread submits jobs to their model's engine, steps every
engine that has work and hands each event to its job's asyncio queue, so all clients of a model share one
batched decode step (continuous batching) and no request handler ever runs the model. At most `max_models`
checkpoints stay loaded; an idle one makes room for the next.
"""

import asyncio
import threading
import traceback
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from chatforge.infer.chat import load_chat_model
from chatforge.infer.engine import Engine, Event, Request, SamplingParams
from chatforge.infer.tools import Tools


@dataclass
class TokenLogprob:
    token: int
    logprob: float
    top: list[tuple[int, float]]  # the most likely tokens at that position, most likely first


@dataclass
class Chunk:
    """One event of a job, with what the handler needs from the request (read here, in the scheduler thread)."""
    text: str
    tokens: list[int]
    forced: bool
    done: bool
    logprobs: list[TokenLogprob]  # one per sampled token of the event when the job asked for logprobs
    error: str = ""  # the engine failed (a bug): the job ends with this


@dataclass(eq=False)
class Job:
    engine: "ServeEngine"
    prompt: list[int]
    params: SamplingParams
    top_logprobs: int = 0
    tools: Tools | None = None  # the tools this request may run; None: the engine's own
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)  # (job, Chunk) pairs; jobs of one reply share it
    loop: asyncio.AbstractEventLoop | None = None
    req: Request | None = None
    cancelled: bool = False
    cursor: int = 0  # tokens of req.tokens already handed out
    sampled: int = 0  # of those, the ones the model sampled


class ServeEngine(Engine):
    """The engine, plus two things a server asks per request that SamplingParams does not hold: the top
    alternatives of each sampled token (OpenAI's top_logprobs) and which tools the request may run. Both hook
    the engine's per-step internals (_sample, _tool_output), keyed by the request's Job."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.jobs: dict[Request, Job] = {}
        self.tops: dict[Request, list[list[tuple[int, float]]]] = {}

    def _sample(self, reqs: list[Request]) -> tuple[list[int], list[float]]:
        out = super()._sample(reqs)
        k = max((self.jobs[r].top_logprobs for r in reqs if r in self.jobs), default=0)
        if k:  # the logits are those _sample read: the penalty edits a copy
            values, ids = F.log_softmax(self.logits[: len(reqs)], -1).topk(min(k, self.logits.size(1)))
            for j, r in enumerate(reqs):
                if (job := self.jobs.get(r)) and job.top_logprobs:
                    top = zip(ids[j, : job.top_logprobs].tolist(), values[j, : job.top_logprobs].tolist(), strict=True)
                    self.tops.setdefault(r, []).append(list(top))
        return out

    def _tool_output(self, req: Request, token: int) -> list[int]:
        job = self.jobs.get(req)
        default, self.tools = self.tools, job.tools if job and job.tools else self.tools
        try:
            return super()._tool_output(req, token)
        finally:
            self.tools = default


@dataclass
class Loaded:
    engine: ServeEngine
    stage: str


class Scheduler:
    """Loads checkpoints on demand and steps their engines in one background thread."""

    def __init__(self, run_path: Path, tools: Tools, max_batch: int = 32, max_models: int = 2):
        self.run_path, self.tools = Path(run_path), tools
        self.max_batch, self.max_models = max_batch, max_models
        self.engines: OrderedDict[str, ServeEngine] = OrderedDict()  # least recently used first
        # engines with requests, evicted or not (one can be evicted between a handler getting it and submitting);
        # replaced, never changed in place, so other threads can read it
        self.active: frozenset[ServeEngine] = frozenset()
        self.inbox: deque[Job] = deque()
        self.load_lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="chatforge-scheduler", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Cancel what is left and end the thread (the HTTP server has already drained its requests)."""
        self.stopping = True
        self.wake.set()
        self.thread.join()
        for engine in self.active:
            for req, job in list(engine.jobs.items()):
                engine.cancel(req)
                job.loop.call_soon_threadsafe(deliver, [(job, Chunk("", [], False, True, []))])

    def engine(self, stage: str) -> ServeEngine:
        """The engine of checkpoint `stage`, loaded if needed (blocking: call it off the event loop). Raises
        RuntimeError when every loaded engine is busy and none can make room."""
        with self.load_lock:
            if stage in self.engines:
                self.engines.move_to_end(stage)
                return self.engines[stage]
            while len(self.engines) >= self.max_models:
                idle = [s for s, e in self.engines.items() if not self.load(e)]
                if not idle:
                    raise RuntimeError(f"{self.max_models} models are loaded and busy; try again shortly")
                del self.engines[idle[0]]
            model, tok, _ = load_chat_model(self.run_path, stage)
            engine = ServeEngine(model, tok, max_batch=self.max_batch, tools=self.tools)
            self.engines[stage] = engine
            return engine

    def submit(self, job: Job) -> None:
        """Queue a job from the event loop; its chunks arrive in job.queue."""
        job.loop = asyncio.get_running_loop()
        self.inbox.append(job)
        self.wake.set()

    def cancel(self, job: Job) -> None:
        job.cancelled = True
        if job.req is not None:  # else the scheduler sees the flag before submitting it
            job.engine.cancel(job.req)
            self._forget(job.engine, job.req)

    def load(self, engine: ServeEngine) -> int:
        """Requests of `engine` in its rows or waiting for one."""
        return len(engine.running) + len(engine.waiting) + sum(job.engine is engine for job in list(self.inbox))

    def waiting(self) -> int:
        """Requests not yet in a cache row."""
        return len(self.inbox) + sum(len(e.waiting) for e in self.active)

    def running(self) -> int:
        return sum(len(e.running) for e in self.active)

    def _forget(self, engine: ServeEngine, req: Request) -> None:
        engine.jobs.pop(req, None)
        engine.tops.pop(req, None)

    def _loop(self) -> None:
        while not self.stopping:
            while self.inbox:
                job = self.inbox.popleft()
                if job.cancelled:
                    continue
                try:
                    job.req = job.engine.submit(job.prompt, job.params)
                except Exception as e:  # the handler checked the request: this is a bug, but only this job's
                    traceback.print_exc()
                    job.loop.call_soon_threadsafe(deliver, [(job, Chunk("", [], False, True, [], repr(e)))])
                    continue
                job.engine.jobs[job.req] = job
                self.active |= {job.engine}
                if job.cancelled:  # cancelled between the check and the submit
                    self.cancel(job)
            busy = [e for e in self.active if e.has_work()]
            self.active = frozenset(busy)
            if not busy:
                self.wake.wait(0.05)
                self.wake.clear()
                continue
            out: dict[asyncio.AbstractEventLoop, list] = {}
            for engine in busy:
                try:
                    events = engine.step()
                except Exception as e:  # a bug: fail this engine's requests and load it afresh next time
                    traceback.print_exc()
                    self._fail(engine, repr(e))
                    continue
                for event in events:
                    if (job := engine.jobs.get(event.request)) is not None:
                        out.setdefault(job.loop, []).append((job, self._chunk(engine, job, event)))
            for loop, items in out.items():  # one wake-up of the event loop per step, not one per event
                loop.call_soon_threadsafe(deliver, items)

    def _fail(self, engine: ServeEngine, error: str) -> None:
        with self.load_lock:
            self.engines = OrderedDict((s, e) for s, e in self.engines.items() if e is not engine)
        self.active -= {engine}
        for job in [*engine.jobs.values(), *(j for j in list(self.inbox) if j.engine is engine)]:
            job.loop.call_soon_threadsafe(deliver, [(job, Chunk("", [], False, True, [], error))])
        engine.jobs.clear()

    def _chunk(self, engine: ServeEngine, job: Job, event: Event) -> Chunk:
        req = event.request
        logprobs = []
        if req.params.logprobs and not event.forced:
            tops = engine.tops.get(req, [])
            for i in range(job.cursor, job.cursor + len(event.tokens)):
                top = tops[job.sampled] if job.sampled < len(tops) else []
                logprobs.append(TokenLogprob(req.tokens[i], req.logprobs[i], top))
                job.sampled += 1
        job.cursor += len(event.tokens)
        if event.done:
            self._forget(engine, req)
        return Chunk(event.text, list(event.tokens), event.forced, event.done, logprobs)


def deliver(items: list[tuple[Job, Chunk]]) -> None:
    for job, chunk in items:
        job.queue.put_nowait((job, chunk))


def prompt_logprobs(engine: Engine, ids: list[int], top: int) -> list[TokenLogprob]:
    """Log-probabilities of each token of `ids` after the ones before it (the first has none: it is skipped),
    for legacy completions' echo; one forward pass of the engine's model, outside the batch."""
    with torch.inference_mode():
        logp = F.log_softmax(engine.model(torch.tensor([ids], device=engine.device))[0, :-1].float(), -1)
        chosen = logp.gather(1, torch.tensor(ids[1:], device=engine.device)[:, None])[:, 0].tolist()
        values, top_ids = logp.topk(top) if top else (logp[:, :0], logp[:, :0].long())
    return [TokenLogprob(t, lp, list(zip(i, v, strict=True)))
            for t, lp, i, v in zip(ids[1:], chosen, top_ids.tolist(), values.tolist(), strict=True)]
