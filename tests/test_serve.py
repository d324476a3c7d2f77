"""The OpenAI-compatible server, through the official openai client, against a uvicorn server in a thread
serving the micro run's checkpoints."""

import json
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import openai
import pytest
import uvicorn
from conftest import chatforge
from test_engine import alone

from chatforge.infer.tools import Tools
from chatforge.model.checkpoint import load_model
from chatforge.runs import checkpoints
from chatforge.serve.app import Reply, ServeLimits, create_app
from chatforge.serve.scheduler import Chunk, Job, ServeEngine
from chatforge.tokenizer.bpe import load_tokenizer
from chatforge.tokenizer.chat import render_prompt

GREEDY = dict(temperature=0, max_tokens=12)


class Server:
    def __init__(self, run, **kwargs):
        self.app = create_app(run, tools=Tools(), **kwargs)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def client(self, key: str = "none") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    def metrics(self) -> dict[str, float]:
        lines = httpx.get(f"{self.url}/metrics").text.splitlines()
        return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in lines if not line.startswith("#"))}

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(micro_run):
    s = Server(micro_run)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def ask(client, text: str, **kw) -> str:
    r = client.chat.completions.create(model="sft", messages=[{"role": "user", "content": text}], **(GREEDY | kw))
    return r.choices[0].message.content


def still_serving(client) -> None:
    assert isinstance(ask(client, "Hello"), str)


def context_of(run) -> int:
    return json.loads((run / "sft" / "config.json").read_text())["seq_len"]


def test_models_most_trained_first(client, micro_run):
    models = client.models.list().data
    assert [m.id for m in models] == checkpoints(micro_run)[::-1] and models[0].id != "base" == models[-1].id
    assert [m.model_extra["kind"] for m in models] == ["chat"] * (len(models) - 1) + ["base"]
    assert all(m.model_extra["context_length"] == context_of(micro_run) and m.model_extra["tools"] == ["python"]
               for m in models)


def test_chat_greedy_as_the_model_alone(client, micro_run):
    tok = load_tokenizer(micro_run / "tokenizer")
    r = client.chat.completions.create(model="sft", messages=[{"role": "user", "content": "Who are you?"}], **GREEDY)
    prompt = render_prompt(tok, [{"role": "user", "content": "Who are you?"}])
    assert r.usage.prompt_tokens == len(prompt) and r.usage.completion_tokens <= 12
    assert r.choices[0].message.content == expected_reply(load_model(micro_run / "sft"), tok, prompt, 12)[0]
    assert r.choices[0].finish_reason in ("stop", "length") and r.object == "chat.completion"


def test_streaming_matches_the_whole_reply(client):
    whole = client.chat.completions.create(model="sft", messages=[{"role": "user", "content": "Hi"}], **GREEDY)
    chunks = list(client.chat.completions.create(model="sft", messages=[{"role": "user", "content": "Hi"}],
                                                 stream=True, stream_options={"include_usage": True}, **GREEDY))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_n_choices_seeded(client):
    kw = dict(model="sft", messages=[{"role": "user", "content": "Tell me a story"}], n=3, temperature=1.0,
              max_tokens=10, seed=7)
    a, b = client.chat.completions.create(**kw), client.chat.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]  # reproducible
    assert len({c.message.content for c in a.choices}) > 1  # n different samples
    streamed = ["", "", ""]
    for c in client.chat.completions.create(stream=True, **kw):
        for choice in c.choices:
            streamed[choice.index] += choice.delta.content or ""
    assert streamed == [c.message.content for c in a.choices]


def test_stop_cuts_before_the_stop_string(client):
    full = ask(client, "Tell me a story", max_tokens=20)
    stop = full.strip()[3:6]
    assert stop and stop in full
    r = client.chat.completions.create(model="sft", messages=[{"role": "user", "content": "Tell me a story"}],
                                       stop=[stop], temperature=0, max_tokens=20)
    assert r.choices[0].message.content == full[: full.index(stop)] and r.choices[0].finish_reason == "stop"


def test_logprobs_with_alternatives(client):
    r = client.chat.completions.create(model="sft", messages=[{"role": "user", "content": "Hi"}], logprobs=True,
                                       top_logprobs=3, **GREEDY)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens - (r.choices[0].finish_reason == "stop")
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token  # greedy: the top one
        assert t.logprob == pytest.approx(t.top_logprobs[0].logprob) and t.logprob <= 0
        assert bytes(t.bytes).decode("utf-8", errors="replace") == t.token
    chunks = list(client.chat.completions.create(model="sft", messages=[{"role": "user", "content": "Hi"}],
                                                 logprobs=True, top_logprobs=3, stream=True, **GREEDY))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [(t.token, t.top_logprobs[1].token) for t in streamed] == [(t.token, t.top_logprobs[1].token)
                                                                     for t in content]


def test_completions_echo_and_logprobs(client, micro_run):
    tok = load_tokenizer(micro_run / "tokenizer")
    r = client.completions.create(model="base", prompt="The king", max_tokens=6, echo=True, logprobs=2,
                                  temperature=0)
    choice = r.choices[0]
    assert choice.text.startswith("The king") and r.usage.completion_tokens <= 6
    lp = choice.logprobs
    assert "".join(lp.tokens) == choice.text and len(lp.tokens) == len(tok.encode("The king")) + 6
    assert lp.text_offset[0] == 0 and all(len(t) == 2 for t in lp.top_logprobs)
    plain = client.completions.create(model="base", prompt="The king", max_tokens=6, temperature=0)
    assert choice.text == "The king" + plain.choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="base", prompt="The king", max_tokens=6, temperature=0, stream=True, echo=True) if c.choices)
    assert streamed == choice.text


def test_null_is_the_default(server):
    body = {"model": "sft", "messages": [{"role": "user", "content": "Hi"}], "temperature": None, "top_p": None,
            "n": None, "stop": None, "seed": None, "max_tokens": 3, "logprobs": None, "stream": None}
    r = httpx.post(f"{server.url}/v1/chat/completions", json=body)
    assert r.status_code == 200 and len(r.json()["choices"]) == 1


def test_chat_on_a_base_model(client):
    r = client.chat.completions.create(model="base", messages=[{"role": "user", "content": "Hi"}], **GREEDY)
    assert isinstance(r.choices[0].message.content, str)


def test_tokenize(server, micro_run):
    tok = load_tokenizer(micro_run / "tokenizer")
    body = httpx.post(f"{server.url}/v1/tokenize", json={"text": "Hello world, héllo!"}).json()
    assert [t["id"] for t in body["tokens"]] == tok.encode("Hello world, héllo!") and body["count"] == len(
        body["tokens"])
    assert "".join(t["text"] for t in body["tokens"]).startswith("Hello world, h")


def pdf_with(text: str) -> bytes:
    """A one-page PDF that shows `text` in Helvetica."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = b"%PDF-1.4\n", []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, obj)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)


@pytest.mark.parametrize("name, data, expect", [
    ("notes.txt", b"plain notes: 42", "plain notes: 42"),
    ("README.md", b"# Title\n\n*some* text", "# Title\n\n*some* text"),
    ("page.html", b"<html><body><nav>menu</nav><article><p>The article body says hello.</p></article></body></html>",
     "The article body says hello."),
    ("paper.pdf", pdf_with("Hello from a PDF"), "Hello from a PDF"),
])
def test_extract(server, name, data, expect):
    r = httpx.post(f"{server.url}/v1/extract", files={"file": (name, data)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert expect in body["text"] and body["name"] == name and body["truncated"] is False
    assert body["chars"] == len(body["text"])


def test_extract_refuses_binary_and_oversized_files(server):
    r = httpx.post(f"{server.url}/v1/extract", files={"file": ("a.exe", b"MZ\x90\x00", "application/octet-stream")})
    assert r.status_code == 415 and r.json()["error"]["message"]
    r = httpx.post(f"{server.url}/v1/extract", files={"file": ("big.txt", b"x" * 9_000_000)})
    assert r.status_code == 413


def test_errors_are_openai_errors_and_the_server_keeps_serving(server, client):
    def chat(**kw):
        return client.chat.completions.create(**({"model": "sft", "max_tokens": 4} | kw))

    with pytest.raises(openai.NotFoundError):
        chat(model="gpt-9", messages=[{"role": "user", "content": "Hi"}])
    still_serving(client)
    with pytest.raises(openai.BadRequestError, match="role"):
        chat(messages=[{"role": "wizard", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError, match="empty"):
        chat(messages=[])
    with pytest.raises(openai.UnprocessableEntityError):
        chat(messages=[{"role": "user", "content": "Hi"}], temperature="hot")
    with pytest.raises(openai.UnprocessableEntityError):
        chat(messages="Hi")
    with pytest.raises(openai.BadRequestError, match="temperature"):
        chat(messages=[{"role": "user", "content": "Hi"}], temperature=-1)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        chat(messages=[{"role": "user", "content": "Hi"}], max_tokens=10**6)
    with pytest.raises(openai.BadRequestError, match="stop"):
        chat(messages=[{"role": "user", "content": "Hi"}], stop=[""])
    for seed in (-1, 2**64 - 1, 2**70):  # any int is a seed
        assert len(chat(messages=[{"role": "user", "content": "Hi"}], seed=seed, n=2).choices) == 2
    still_serving(client)
    for body, status in [(b"{not json", 400), (b"x" * 10_000_000, 413), (b'{"model": "sft"}', 422)]:
        r = httpx.post(f"{server.url}/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        assert r.status_code == status and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(f"{server.url}/v1/nowhere").json()["error"]["message"]
    still_serving(client)


def test_context_overflow_drops_old_turns_and_says_so(client, micro_run):
    turns = []
    for i in range(context_of(micro_run) // 8):  # about twice the context
        turns += [{"role": "user", "content": f"Question {i} about the weather"},
                  {"role": "assistant", "content": f"Answer {i} about the weather"}]
    messages = [{"role": "system", "content": "Be brief."}, *turns, {"role": "user", "content": "And now?"}]
    r = client.chat.completions.create(model="sft", messages=messages, max_tokens=8, temperature=0)
    ctx = r.model_extra["context"]
    assert ctx["dropped_messages"] > 0 and ctx["dropped_messages"] % 2 == 0  # whole turns
    assert ctx["context_length"] == context_of(micro_run) and ctx["prompt_tokens"] + 8 <= ctx["context_length"]
    first = next(client.chat.completions.create(model="sft", messages=messages, max_tokens=8, stream=True))
    assert first.model_extra["context"] == ctx
    short = client.chat.completions.create(model="sft", messages=messages[-1:], max_tokens=8, temperature=0)
    assert "context" not in short.model_extra
    with pytest.raises(openai.BadRequestError, match="context") as e:
        ask(client, "word " * 2 * context_of(micro_run))
    assert e.value.code == "context_length_exceeded"
    still_serving(client)


def test_api_key(micro_run):
    s = Server(micro_run, api_key="s3cret")
    try:
        with pytest.raises(openai.AuthenticationError):
            s.client("wrong").models.list()
        r = httpx.get(f"{s.url}/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert [m.id for m in s.client("s3cret").models.list().data] == checkpoints(micro_run)[::-1]
        assert httpx.get(f"{s.url}/health").status_code == 200
    finally:
        s.stop()


def test_queue_full_is_429_and_serving_goes_on(micro_run, monkeypatch):
    slow_step(monkeypatch)
    s = Server(micro_run, limits=ServeLimits(max_batch=1, max_waiting=1))
    client = s.client()
    try:
        with ThreadPoolExecutor(2) as pool:  # one in the row, one waiting
            busy = [pool.submit(ask, client, "Hi", max_tokens=20) for _ in range(2)]
            wait_for(lambda: s.metrics()["chatforge_requests_running"] == 1
                     and s.metrics()["chatforge_requests_waiting"] == 1)
            with pytest.raises(openai.RateLimitError):
                ask(client, "Hi")
            for f in busy:
                f.result()
        still_serving(client)
    finally:
        s.stop()


def expected_reply(model, tok, prompt: list[int], n: int) -> tuple[str, str]:
    """The greedy reply of `prompt` run alone: (whole reply, the part any batch must reproduce: up to a near tie)."""
    tokens, sure = alone(model, prompt, n)
    # content ends where the reply ends, or where a tool call or reasoning starts (those go to their own fields)
    stops = {tok.special(t) for t in ("<|im_end|>", "<|python_start|>", "<|search_start|>", "<think>")} | {tok.bos_id}
    end = next((i for i, t in enumerate(tokens) if t in stops), len(tokens))
    return tok.decode(tokens[:end]), tok.decode(tokens[: min(sure, end)])


def test_32_concurrent_streams_get_their_greedy_replies(server, micro_run):
    tok = load_tokenizer(micro_run / "tokenizer")
    model = load_model(micro_run / "sft")
    questions = [f"What is {i} plus {i % 7}?" if i % 2 else f"Tell me about topic {i}" for i in range(32)]
    start = threading.Barrier(32)

    def stream(q: str) -> str:
        client = server.client()
        start.wait()
        # no server-side tools: the reply alone below has no tool outputs pasted in
        chunks = client.chat.completions.create(model="sft", messages=[{"role": "user", "content": q}],
                                                stream=True, extra_body={"tools_enabled": []}, **GREEDY)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    with ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(stream, questions))
    for q, got in zip(questions, replies, strict=True):
        whole, sure = expected_reply(model, tok, render_prompt(tok, [{"role": "user", "content": q}]), 12)
        assert got == whole if sure == whole else got.startswith(sure)
    assert server.metrics()["chatforge_requests_running"] == 0


def slow_step(monkeypatch) -> None:
    """Every engine step takes 20 ms more: a generation lasts long enough to leave in the middle of it."""
    step = ServeEngine.step

    def slow(self):
        time.sleep(0.02)
        return step(self)

    monkeypatch.setattr(ServeEngine, "step", slow)


def wait_for(cond, seconds: float = 20) -> None:
    deadline = time.time() + seconds
    while not cond():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def test_disconnect_cancels_and_frees_the_row(server, monkeypatch):
    slow_step(monkeypatch)
    before = server.metrics()["chatforge_requests_cancelled_total"]
    body = {"model": "base", "prompt": "The king", "stream": True, "max_tokens": 50, "temperature": 0}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body) as r:
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
        wait_for(lambda: server.metrics()["chatforge_requests_running"] == 1)
    wait_for(lambda: server.metrics()["chatforge_requests_running"] == 0)
    assert server.metrics()["chatforge_requests_cancelled_total"] == before + 1
    still_serving(server.client())


def test_a_client_that_gives_up_on_a_whole_reply_cancels_it(server, monkeypatch):
    slow_step(monkeypatch)
    before = server.metrics()["chatforge_requests_cancelled_total"]
    body = {"model": "base", "prompt": "The king", "max_tokens": 50, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/completions", json=body, timeout=0.3)
    wait_for(lambda: server.metrics()["chatforge_requests_cancelled_total"] == before + 1)
    assert server.metrics()["chatforge_requests_running"] == 0


def test_reply_sorts_reasoning_tool_calls_and_answer(micro_run):
    tok = load_tokenizer(micro_run / "tokenizer")
    reply = Reply(tok)

    def chunk(text: str, special: str | None = None, forced: bool = False, tokens=None) -> Chunk:
        ids = tokens if tokens is not None else ([tok.special(special)] if special else tok.encode(text))
        return Chunk(text + (special or ""), ids, forced, False, [])

    deltas = [reply.feed(c) for c in [
        chunk("", "<think>"), chunk("add them"), chunk("", "</think>"), chunk("It is "),
        chunk("", "<|python_start|>"), chunk("2+2"), chunk("", "<|python_end|>"),
        Chunk("<|output_start|>4<|output_end|>", [tok.special("<|output_start|>"), *tok.encode("4"),
                                                  tok.special("<|output_end|>")], True, False, []),
        chunk("4.")]]
    tool = {"name": "python", "input": "2+2", "output": "4"}
    assert [d for d in deltas if d] == [{"reasoning_content": "add them"}, {"content": "It is "}, {"tool": tool},
                                        {"content": "4."}]
    assert reply.message() == {"role": "assistant", "content": "It is 4.", "reasoning_content": "add them",
                               "tools": [tool]}


def test_search_needs_an_index(client):
    with pytest.raises(openai.BadRequestError, match="index"):
        client.chat.completions.create(model="sft", messages=[{"role": "user", "content": "Hi"}],
                                       extra_body={"tools_enabled": ["search"]}, max_tokens=2)
    r = client.chat.completions.create(model="sft", messages=[{"role": "user", "content": "Hi"}],
                                       extra_body={"tools_enabled": []}, max_tokens=2)
    assert r.choices[0].message.content is not None


def test_health_metrics_and_page(server):
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    m = server.metrics()
    assert m['chatforge_requests_total{path="/v1/chat/completions",status="200"}'] >= 1
    assert "chatforge_time_to_first_token_seconds_count" in m
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert json.loads(httpx.get(f"{server.url}/v1/models").text)["object"] == "list"


def test_shutdown_lets_streams_in_flight_finish(micro_run, monkeypatch):
    slow_step(monkeypatch)
    s = Server(micro_run)
    body = {"model": "base", "prompt": "The king", "stream": True, "max_tokens": 30, "temperature": 0}
    with httpx.stream("POST", f"{s.url}/v1/completions", json=body) as r:
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
        s.server.should_exit = True  # what Ctrl-C does
        rest = [line for line in lines if line.startswith("data:")]
    s.thread.join(timeout=30)
    assert rest[-1] == "data: [DONE]" and json.loads(rest[-2][6:])["choices"][0]["finish_reason"] == "length"
    assert not s.thread.is_alive()


def test_an_engine_failure_is_a_500_and_the_next_request_gets_a_fresh_engine(server, client, monkeypatch):
    def broken(self):
        monkeypatch.undo()  # once
        raise RuntimeError("boom")

    monkeypatch.setattr(ServeEngine, "step", broken)
    with pytest.raises(openai.InternalServerError, match="boom"):
        ask(client, "Hi")
    still_serving(client)


def test_cli_says_when_the_port_is_taken(micro_run):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        out = chatforge("serve", "--run", str(micro_run), "--port", str(s.getsockname()[1]), check=False)
    assert out.returncode == 2 and "pick another --port" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_each_request_runs_only_the_tools_it_enabled(micro_run):
    tok = load_tokenizer(micro_run / "tokenizer")
    engine = ServeEngine(load_model(micro_run / "sft"), tok, max_batch=2, tools=Tools(python=True))
    start, end = tok.special("<|python_start|>"), tok.special("<|python_end|>")
    outputs = []
    for tools in (None, Tools(python=False)):  # the engine's tools, then a request that turned python off
        req = engine.submit(render_prompt(tok, [{"role": "user", "content": "Hi"}]))
        engine.jobs[req] = Job(engine, req.prompt, req.params, tools=tools)
        req.tokens = [start, *tok.encode("6*7"), end]  # the model's call, as if sampled
        outputs.append(tok.decode(engine._tool_output(req, end)[1:-1]))
    assert outputs[0] == "42" and "not enabled" in outputs[1]


def test_a_run_with_only_a_base_model(micro_run, tmp_path):
    for d in ("base", "tokenizer"):
        shutil.copytree(micro_run / d, tmp_path / d)
    s = Server(tmp_path)
    try:
        client = s.client()
        assert [(m.id, m.model_extra["kind"]) for m in client.models.list().data] == [("base", "base")]
        r = client.chat.completions.create(model="base", messages=[{"role": "user", "content": "Hi"}], **GREEDY)
        assert r.usage.completion_tokens >= 1
        assert client.completions.create(model="base", prompt="The", max_tokens=3).usage.completion_tokens >= 1
        with pytest.raises(openai.NotFoundError):
            ask(client, "Hi")  # no sft
    finally:
        s.stop()


def test_at_most_max_models_stay_loaded(micro_run):
    s = Server(micro_run, limits=ServeLimits(max_models=1))
    try:
        client = s.client()
        ask(client, "Hi")
        assert client.completions.create(model="base", prompt="The", max_tokens=3).usage.completion_tokens >= 1
        assert httpx.get(f"{s.url}/health").json()["loaded"] == ["base"] and s.metrics()["chatforge_models_loaded"] == 1
        ask(client, "Hi")  # loaded again
        assert httpx.get(f"{s.url}/health").json()["loaded"] == ["sft"]
    finally:
        s.stop()
