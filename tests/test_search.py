import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import chatforge

from chatforge.infer.search import HttpSearch, LocalSearch, build_index, format_results, split_passages
from chatforge.infer.tools import Tools, tools_for_run

DOCS = [
    ("oil/1", "Oil prices rose sharply on Monday as cold weather lifted demand for heating fuel across the US."),
    ("football/2", "The striker scored twice in the second half and the club moved to the top of the league table."),
    ("film/3", "The director's new film won the audience award at the festival after a standing ovation."),
    ("long/4", "\n\n".join(f"paragraph {i} " + "filler words here " * 30 for i in range(5))),
]


@pytest.fixture
def data_dir(tmp_path):
    for split, docs in (("train", DOCS[:3]), ("val", DOCS[3:])):
        (tmp_path / "data" / split).mkdir(parents=True)
        table = pa.table({"text": [t for _, t in docs], "id": [i for i, _ in docs],
                          "url": [f"https://example.com/{i}" for i, _ in docs]})
        pq.write_table(table, tmp_path / "data" / split / "part-00000.parquet")
    return tmp_path / "data"


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
    with pytest.raises(FileNotFoundError, match="chatforge data index"):
        LocalSearch(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="chatforge data"):
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
    tools = tools_for_run(tmp_path, search_url=url)  # config picks the backend: a url beats the local index
    assert tools.run("search", " everest ").startswith("[1] (https://r0.example) title 0: about everest")
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
