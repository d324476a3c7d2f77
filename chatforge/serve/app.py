"""`chatforge serve`: the OpenAI API over a run's checkpoints, the chat page at / and the run's report at /report.

/v1/models, /v1/chat/completions and /v1/completions (streamed as server-sent events or not), /v1/tokenize,
/v1/extract (a file's text), /health and /metrics. The model is a checkpoint stage name (rl, sft, base); all
requests for it share one engine that one scheduler thread steps (serve/scheduler.py). Errors have OpenAI's
body, {"error": {"message", "type", "param", "code"}}, so OpenAI clients raise their usual exception classes.
"""

import asyncio
import dataclasses
import hmac
import html
import json
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, model_validator
from starlette.exceptions import HTTPException

from chatforge.errors import UserError
from chatforge.infer.chat import chat_params
from chatforge.infer.engine import TOOL_CALLS, SamplingParams
from chatforge.infer.tools import Tools, tools_for_run
from chatforge.runs import checkpoints
from chatforge.serve.files import UnsupportedFile, extract_text
from chatforge.serve.scheduler import Chunk, Job, Scheduler, ServeEngine, TokenLogprob, prompt_logprobs
from chatforge.tokenizer.bpe import SPECIAL_TOKENS, Tokenizer, load_tokenizer
from chatforge.tokenizer.chat import render_prompt

STATIC = Path(__file__).parent / "static"
API_PATHS = {"/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/tokenize", "/v1/extract"}  # metrics labels
NO_REPORT = ("<!doctype html><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">"
             "<title>no report yet</title><p>{run} has no report yet: run <code>chatforge report --run {run}</code> "
             "(<code>chatforge speedrun</code> ends with it), then reload this page.</p>")
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               413: "invalid_request_error", 415: "invalid_request_error", 422: "invalid_request_error",
               429: "rate_limit_error", 500: "server_error", 503: "server_error"}


@dataclass
class ServeLimits:
    max_batch: int = 32  # cache rows per engine: requests decoded together
    max_waiting: int = 64  # requests queued for a row before a 429
    max_models: int = 2  # checkpoints kept loaded
    max_body: int = 1_000_000  # bytes of a JSON request
    max_upload: int = 8_000_000  # bytes of a file sent to /v1/extract
    max_tokens: int = 4096  # new tokens one choice may ask for
    max_n: int = 8  # choices per request
    extract_chars: int = 100_000  # an extracted file's text is cut here


class ApiError(HTTPException):
    """An error with OpenAI's body. An HTTPException, so FastAPI lets it out of request parsing unchanged."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(status, message, headers)
        self.param, self.code = param, code


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code}}


# -- request bodies (OpenAI's fields; anything else is ignored, as OpenAI's own server does with unknown ones) --

class Message(BaseModel):
    role: str
    content: str | list[dict] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class Sampling(BaseModel):
    model: str
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # chatforge extras, as in `chatforge chat`
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    @model_validator(mode="before")
    @classmethod
    def null_is_default(cls, data):
        """Many clients send `"temperature": null` for "not set"."""
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


class ChatRequest(Sampling):
    messages: list[Message]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int = Field(0, ge=0, le=20)
    tools_enabled: list[Literal["python", "search"]] | None = None


class CompletionRequest(Sampling):
    prompt: str | list[str]
    max_tokens: int = 16
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)


class TokenizeRequest(BaseModel):
    text: str


@dataclass
class Metrics:
    requests: Counter = dataclasses.field(default_factory=Counter)  # (path, status) -> responses
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cancelled: int = 0
    ttft_seconds: float = 0.0
    ttft_count: int = 0

    def finished(self, stats) -> None:
        self.prompt_tokens += stats.prompt_tokens
        self.completion_tokens += stats.new_tokens
        if stats.new_tokens:
            self.ttft_seconds += stats.ttft
            self.ttft_count += 1


class Guard:
    """ASGI middleware: the body size limit (413, before the body is parsed) and the response counts."""

    def __init__(self, app, limits: ServeLimits, metrics: Metrics):
        self.app, self.limits, self.metrics = app, limits, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        limit = self.limits.max_upload if path == "/v1/extract" else self.limits.max_body
        declared = dict(scope["headers"]).get(b"content-length")

        async def counted(message):
            if message["type"] == "http.response.start":
                self.metrics.requests[(path if path in API_PATHS else "other", message["status"])] += 1
            await send(message)

        if declared is not None and declared.isdigit() and int(declared) > limit:
            more = True
            while more:  # read it all first: a client still sending would not see the answer
                message = await receive()
                more = message.get("more_body", False) and message["type"] == "http.request"
            body = error_body(413, f"the request body is {int(declared)} bytes; the limit is {limit}")
            return await JSONResponse(body, 413)(scope, receive, counted)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise ApiError(413, f"the request body is over the limit of {limit} bytes")
            return message

        await self.app(scope, limited, counted)


class Reply:
    """One choice's generated tokens sorted into what the API shows: answer text, reasoning (<think>), and
    server-side tool calls (call text, then the output the runtime pasted in)."""

    def __init__(self, tok: Tokenizer):
        self.tok = tok
        self.special = {tok.special(name): name for name in SPECIAL_TOKENS[4:]}  # tool and think tokens
        self.calls = {start: name for start, name in TOOL_CALLS.values()}
        self.mode = "content"  # content | reasoning | call
        self.call: dict | None = None  # the tool call being written or waiting for its output
        self.content, self.reasoning, self.tools = [], [], []

    def feed(self, chunk: Chunk) -> dict:
        """The delta for one chunk: {"content"?, "reasoning_content"?, "tool"?}."""
        text, delta = chunk.text, {}
        if chunk.forced:  # <|output_start|> result <|output_end|>: the call above has run
            if self.call is not None:
                self.call["output"] = self.tok.decode([t for t in chunk.tokens if t not in self.special])
                self.tools.append(self.call)
                delta["tool"], self.call = self.call, None
            return delta
        names = [self.special[t] for t in chunk.tokens if t in self.special]
        for name in names:
            text = text.replace(name, "", 1)
        if self.mode == "call":
            self.call["input"] += text
        elif text:
            key = "reasoning_content" if self.mode == "reasoning" else "content"
            (self.reasoning if self.mode == "reasoning" else self.content).append(text)
            delta[key] = text
        for name in names:
            if name == "<think>":
                self.mode = "reasoning"
            elif name == "</think>" or name in TOOL_CALLS:
                self.mode = "content"
            elif name in self.calls:
                self.mode, self.call = "call", {"name": self.calls[name], "input": "", "output": ""}
        return delta

    def message(self) -> dict:
        msg = {"role": "assistant", "content": "".join(self.content)}
        if self.reasoning:
            msg["reasoning_content"] = "".join(self.reasoning)
        if self.tools:
            msg["tools"] = self.tools
        return msg


def token_text(tok: Tokenizer, token: int) -> str:
    return tok.token_bytes(token).decode("utf-8", errors="replace")


def token_entry(tok: Tokenizer, token: int, logprob: float) -> dict:
    return {"token": token_text(tok, token), "logprob": logprob, "bytes": list(tok.token_bytes(token))}


def chat_logprobs(tok: Tokenizer, items: list[TokenLogprob]) -> list[dict]:
    return [token_entry(tok, i.token, i.logprob) | {"top_logprobs": [token_entry(tok, t, lp) for t, lp in i.top]}
            for i in items]


def legacy_logprobs(tok: Tokenizer, items: list[TokenLogprob], offset: int) -> dict:
    """The legacy completions' logprobs: parallel lists, text offsets counted from `offset`."""
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for i in items:
        text = token_text(tok, i.token)
        out["tokens"].append(text)
        out["token_logprobs"].append(i.logprob)
        out["top_logprobs"].append({token_text(tok, t): lp for t, lp in i.top})
        out["text_offset"].append(offset)
        offset += len(text)
    return out


def fit_context(tok: Tokenizer, messages: list[dict], context: int, reserve: int) -> tuple[list[int], int]:
    """The prompt of `messages`, dropping the oldest turns after the system prompt until `reserve` positions are
    left for the answer; (prompt, messages dropped). What cannot fit even with only the system prompt and the
    last message is the user's to shorten."""
    head = 0
    while head < len(messages) and messages[head]["role"] == "system":
        head += 1
    rest, dropped = messages[head:], 0
    if not rest:
        raise ApiError(400, "the conversation needs a message after the system prompt", "messages")
    while True:
        try:
            prompt = render_prompt(tok, messages[:head] + rest)
        except ValueError as e:
            raise ApiError(400, str(e), "messages") from None
        if len(prompt) + reserve <= context:
            return prompt, dropped
        if len(rest) == 1:
            raise ApiError(400, f"the prompt is {len(prompt)} tokens with only the system prompt and the last "
                                f"message; the model's context is {context} tokens and {reserve} are kept for the "
                                f"answer: shorten the message", "messages", "context_length_exceeded")
        rest, dropped = rest[1:], dropped + 1
        while len(rest) > 1 and rest[0]["role"] != "user":  # a turn starts with the user
            rest, dropped = rest[1:], dropped + 1


def sse(obj) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def create_app(run_path: str | Path, api_key: str | None = None, limits: ServeLimits | None = None,
               tools: Tools | None = None) -> FastAPI:
    run_path = Path(run_path)
    limits = limits or ServeLimits()
    stages = list(reversed(checkpoints(run_path)))  # most trained first
    if not stages:
        raise UserError(f"no checkpoint in {run_path}; run `chatforge speedrun --run {run_path}` first")
    tok = load_tokenizer(run_path / "tokenizer")
    tools = tools if tools is not None else tools_for_run(run_path)
    contexts = {s: json.loads((run_path / s / "config.json").read_text())["seq_len"] for s in stages}
    scheduler = Scheduler(run_path, tools, limits.max_batch, limits.max_models)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        scheduler.start()
        yield
        scheduler.stop()

    app = FastAPI(title="chatforge", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(Guard, limits=limits, metrics=metrics)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        body = error_body(e.status_code, str(e.detail), getattr(e, "param", None), getattr(e, "code", None))
        return JSONResponse(body, e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            return JSONResponse(error_body(400, "the body is not valid JSON"), 400)
        err = errors[0]
        where = ".".join(str(p) for p in err.get("loc", ())[1:])
        return JSONResponse(error_body(422, f"{where}: {err.get('msg')}", where or None), 422)

    @app.exception_handler(UserError)
    async def user_error(request: Request, e: UserError) -> JSONResponse:
        status = 415 if isinstance(e, UnsupportedFile) else 400
        return JSONResponse(error_body(status, str(e)), status)

    async def authorized(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise ApiError(401, "a valid API key is needed: Authorization: Bearer KEY", code="invalid_api_key")

    v1 = [Depends(authorized)]

    async def engine_for(model: str) -> ServeEngine:
        if model not in stages:
            raise ApiError(404, f"no model {model!r}; this server has {', '.join(stages)}", "model",
                           "model_not_found")
        try:
            return await asyncio.to_thread(scheduler.engine, model)
        except RuntimeError as e:
            raise ApiError(503, str(e)) from None

    def admit(engine: ServeEngine, n: int) -> None:
        if (load := scheduler.load(engine)) + n > limits.max_batch + limits.max_waiting:
            raise ApiError(429, f"{load} requests are running or waiting on this model; try again shortly",
                           headers={"Retry-After": "1"})

    def params_of(body: Sampling, max_tokens: int | None, room: int, logprobs: bool) -> list[SamplingParams]:
        """n sampling settings for `body`: up to `max_tokens` new tokens (None: as many as the server allows),
        at most `room`, what the context leaves."""
        if body.n > limits.max_n:
            raise ApiError(400, f"n is {body.n}; the limit is {limits.max_n}", "n")
        if max_tokens is not None and max_tokens > limits.max_tokens:
            raise ApiError(400, f"max_tokens is {max_tokens}; the limit is {limits.max_tokens}", "max_tokens")
        max_tokens = min(limits.max_tokens if max_tokens is None else max_tokens, room)
        stop = [body.stop] if isinstance(body.stop, str) else body.stop or []
        if len(stop) > 4:
            raise ApiError(400, "at most 4 stop sequences", "stop")
        base = SamplingParams(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                              top_k=body.top_k, min_p=body.min_p, repetition_penalty=body.repetition_penalty,
                              stop=tuple(stop), logprobs=logprobs)
        # n different samples, each reproducible from the seed (any int: torch takes seeds modulo 2**64)
        return [dataclasses.replace(base, seed=None if body.seed is None else (body.seed + i) % 2**64)
                for i in range(body.n)]

    def tools_of(names: list[str] | None) -> Tools:
        names = ["python"] if names is None else names
        if "search" in names and tools.search is None:
            raise ApiError(400, "search is not available: the run has no index (`chatforge data index`)",
                           "tools_enabled")
        return dataclasses.replace(tools, python="python" in names and tools.python,
                                   search=tools.search if "search" in names else None)

    def start(engine: ServeEngine, prompts: list[list[int]], params: list[SamplingParams], top: int = 0,
              job_tools: Tools | None = None) -> list[Job]:
        admit(engine, len(prompts))
        queue: asyncio.Queue = asyncio.Queue()
        jobs = [Job(engine, p, sp, top, job_tools, queue) for p, sp in zip(prompts, params, strict=True)]
        for job in jobs:
            scheduler.submit(job)
        return jobs

    async def chunks(jobs: list[Job], request: Request | None = None) -> AsyncIterator[tuple[int, Chunk]]:
        """(choice index, chunk) for every job until all are done; leaving early cancels the rest. With `request`
        (a reply that is not streamed: nothing is sent that would fail), it also ends when the client is gone."""
        index = {job: i for i, job in enumerate(jobs)}
        live, loop = len(jobs), asyncio.get_running_loop()
        check = loop.time() + 0.25  # when to ask whether the client is still there
        try:
            while live:
                if request is not None and loop.time() >= check:
                    if await request.is_disconnected():
                        return
                    check = loop.time() + 0.25
                if request is None:
                    job, chunk = await jobs[0].queue.get()
                else:
                    try:
                        job, chunk = await asyncio.wait_for(jobs[0].queue.get(), 0.25)
                    except TimeoutError:
                        continue
                if chunk.error:
                    raise ApiError(500, f"the model failed: {chunk.error}")
                live -= chunk.done
                if chunk.done:
                    metrics.finished(job.req.stats)
                yield index[job], chunk
        finally:
            for job in jobs:
                if job.req is None or not job.req.done:
                    scheduler.cancel(job)
                    metrics.cancelled += 1

    # -- routes --

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "models": stages, "loaded": list(scheduler.engines)}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> str:
        lines = ["# TYPE chatforge_requests_total counter"]
        lines += [f'chatforge_requests_total{{path="{p}",status="{s}"}} {n}' for (p, s), n in
                  sorted(metrics.requests.items())]
        for name, kind, value in [
            ("prompt_tokens_total", "counter", metrics.prompt_tokens),
            ("completion_tokens_total", "counter", metrics.completion_tokens),
            ("requests_cancelled_total", "counter", metrics.cancelled),
            ("time_to_first_token_seconds_sum", "counter", round(metrics.ttft_seconds, 6)),
            ("time_to_first_token_seconds_count", "counter", metrics.ttft_count),
            ("requests_running", "gauge", scheduler.running()),
            ("requests_waiting", "gauge", scheduler.waiting()),
            ("models_loaded", "gauge", len(scheduler.engines)),
        ]:
            lines += [f"# TYPE chatforge_{name} {kind}", f"chatforge_{name} {value}"]
        return "\n".join(lines) + "\n"

    @app.get("/v1/models", dependencies=v1)
    async def models() -> dict:
        return {"object": "list", "data": [
            {"id": s, "object": "model", "created": int((run_path / s / "model.safetensors").stat().st_mtime),
             "owned_by": "chatforge", "kind": "base" if s == "base" else "chat", "context_length": contexts[s],
             "tools": [name for name, on in (("python", tools.python), ("search", tools.search)) if on]}
            for s in stages]}

    @app.post("/v1/tokenize", dependencies=v1)
    async def tokenize(body: TokenizeRequest) -> dict:
        ids = tok.encode(body.text)
        return {"tokens": [{"id": i, "text": token_text(tok, i)} for i in ids],
                "count": len(ids)}

    @app.post("/v1/extract", dependencies=v1)
    async def extract(file: Annotated[UploadFile, File()]) -> dict:
        name = file.filename or "file"
        text = await asyncio.to_thread(extract_text, name, await file.read(), file.content_type or "")
        cut = len(text) > limits.extract_chars
        return {"name": name, "text": text[: limits.extract_chars], "chars": len(text), "truncated": cut}

    @app.post("/v1/chat/completions", dependencies=v1)
    async def chat_completions(body: ChatRequest, request: Request):
        if not body.messages:
            raise ApiError(400, "messages must not be empty", "messages")
        engine = await engine_for(body.model)
        context = contexts[body.model]
        wanted = body.max_completion_tokens or body.max_tokens
        reserve = max(1, min(wanted or context // 4, context // 4))
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.content}
                    for m in body.messages]
        prompt, dropped = fit_context(tok, messages, context, reserve)
        params = params_of(body, wanted, context - len(prompt), body.logprobs or body.top_logprobs > 0)
        jobs = start(engine, [prompt] * body.n, [chat_params(tok, p) for p in params], body.top_logprobs,
                     tools_of(body.tools_enabled))
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": body.model}
        extra = {"context": {"dropped_messages": dropped, "prompt_tokens": len(prompt), "context_length": context}} \
            if dropped else {}
        replies = [Reply(tok) for _ in jobs]
        if body.stream:
            return StreamingResponse(chat_stream(jobs, replies, head, extra, body), media_type="text/event-stream")
        logprobs = [[] for _ in jobs]
        async for i, chunk in chunks(jobs, request):
            replies[i].feed(chunk)
            logprobs[i] += chunk.logprobs
        choices = [{"index": i, "message": r.message(), "finish_reason": job.req.stats.stop_reason,
                    "logprobs": {"content": chat_logprobs(tok, logprobs[i])} if body.logprobs else None}
                   for i, (r, job) in enumerate(zip(replies, jobs, strict=True))]
        return {**head, "object": "chat.completion", "choices": choices, "usage": usage(jobs), **extra}

    async def chat_stream(jobs: list[Job], replies: list[Reply], head: dict, extra: dict,
                          body: ChatRequest) -> AsyncIterator[str]:
        head = {**head, "object": "chat.completion.chunk"}
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        tail = {"usage": None} if include_usage else {}
        for i in range(len(jobs)):
            yield sse({**head, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                           "logprobs": None, "finish_reason": None}], **tail, **extra})
        async for i, chunk in chunks(jobs):
            delta = replies[i].feed(chunk)
            logprobs = {"content": chat_logprobs(tok, chunk.logprobs)} if chunk.logprobs else None
            if delta or logprobs:
                yield sse({**head, "choices": [{"index": i, "delta": delta, "logprobs": logprobs,
                                               "finish_reason": None}], **tail})
            if chunk.done:
                yield sse({**head, "choices": [{"index": i, "delta": {}, "logprobs": None,
                                               "finish_reason": jobs[i].req.stats.stop_reason}], **tail})
        if include_usage:
            yield sse({**head, "choices": [], "usage": usage(jobs)})
        yield "data: [DONE]\n\n"

    @app.post("/v1/completions", dependencies=v1)
    async def completions(body: CompletionRequest, request: Request):
        engine = await engine_for(body.model)
        context = contexts[body.model]
        texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not texts or not all(texts):
            raise ApiError(400, "the prompt is empty", "prompt")
        prompts = [[tok.bos_id, *tok.encode(t)] for t in texts]  # after <|endoftext|>, as in pretraining
        if (longest := max(len(p) for p in prompts)) >= context:
            raise ApiError(400, f"the prompt is {longest} tokens; the model's context is {context}", "prompt",
                           "context_length_exceeded")
        want = body.logprobs is not None
        params = params_of(body, body.max_tokens, context - longest, want)
        params = [dataclasses.replace(p, stop_ids=(tok.bos_id,)) for p in params]
        echoed = [await asyncio.to_thread(prompt_logprobs, engine, p, body.logprobs) if body.echo and want else []
                  for p in prompts]
        jobs = start(engine, [p for p in prompts for _ in params], params * len(prompts), body.logprobs or 0)
        # choice i continues prompt i // n; with echo its text (and logprobs) start with the prompt's
        first = [(texts[i // body.n], echoed[i // body.n]) if body.echo else ("", []) for i in range(len(jobs))]
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": body.model}
        if body.stream:
            return StreamingResponse(completion_stream(jobs, head, first, body), media_type="text/event-stream")
        out, items = [text for text, _ in first], [list(lp) for _, lp in first]
        async for i, chunk in chunks(jobs, request):
            out[i] += chunk.text
            items[i] += chunk.logprobs
        choices = [{"index": i, "text": out[i], "logprobs": legacy_logprobs(tok, items[i], 0) if want else None,
                    "finish_reason": job.req.stats.stop_reason} for i, job in enumerate(jobs)]
        return {**head, "choices": choices, "usage": usage(jobs)}

    async def completion_stream(jobs: list[Job], head: dict, first: list[tuple[str, list]],
                                body: CompletionRequest) -> AsyncIterator[str]:
        want = body.logprobs is not None
        offsets = [len(text) for text, _ in first]
        if body.echo:
            for i, (text, items) in enumerate(first):
                yield sse({**head, "choices": [{"index": i, "text": text, "finish_reason": None,
                                               "logprobs": legacy_logprobs(tok, items, 0) if want else None}]})
        async for i, chunk in chunks(jobs):
            if chunk.text or chunk.logprobs:
                lp = legacy_logprobs(tok, chunk.logprobs, offsets[i]) if want else None
                yield sse({**head, "choices": [{"index": i, "text": chunk.text, "logprobs": lp,
                                               "finish_reason": None}]})
                offsets[i] += len(chunk.text)
            if chunk.done:
                yield sse({**head, "choices": [{"index": i, "text": "", "logprobs": None,
                                               "finish_reason": jobs[i].req.stats.stop_reason}]})
        if body.stream_options is not None and body.stream_options.include_usage:
            yield sse({**head, "choices": [], "usage": usage(jobs)})
        yield "data: [DONE]\n\n"

    def usage(jobs: list[Job]) -> dict:
        prompt = sum(len(p) for p in {id(j.prompt): j.prompt for j in jobs}.values())
        completion = sum(j.req.stats.new_tokens for j in jobs)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    @app.get("/report", response_class=HTMLResponse)
    async def report_card() -> HTMLResponse:
        # no API key, as for the chat page: the report holds the run's figures and samples, not its models
        page = run_path / "report" / "index.html"
        if not page.exists():
            return HTMLResponse(NO_REPORT.format(run=html.escape(str(run_path))), 404)
        return HTMLResponse(page.read_text())

    if STATIC.is_dir():  # the chat page; last, so the API's routes come first
        app.mount("/", StaticFiles(directory=STATIC, html=True), name="static")
    return app


def serve(run_path: str | Path, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          limits: ServeLimits | None = None) -> None:
    import uvicorn

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            s.bind((host, port))
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port or --host") from None
    app = create_app(run_path, api_key, limits)
    print(f"chatforge serve: {run_path} at http://{host}:{port}/ (OpenAI API at http://{host}:{port}/v1, the report "
          f"card at http://{host}:{port}/report)"
          f"{'; API key required' if api_key else ''}", flush=True)
    if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        print(f"chatforge serve: warning: {host} is reachable from other machines and no --api-key is set",
              file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=10)
