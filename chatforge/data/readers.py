"""Raw inputs → `Document`s: WARC/WET (Common Crawl), HTML files, JSONL, FineWeb parquet, plain text.

Reading never loses a file and never stops a run: bad bytes, truncated archives, binary payloads,
oversized or empty inputs are counted under a named reason in `stats` and skipped.
"""

import gzip
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from chatforge.errors import UserError

# A 50 MB "document" is a log dump or a binary mislabelled as text: no quality rule is tuned for it,
# and one of them would stall a worker for minutes.
MAX_DOC_BYTES = 5_000_000
HTML_TYPES = ("text/html", "application/xhtml+xml")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", re.IGNORECASE)


@dataclass
class Document:
    """One document, with FineWeb's column names so parquet output is a drop-in FineWeb shard.
    `html` holds the raw page until the extract step turns it into `text`; it is never written out."""

    text: str
    id: str
    url: str | None = None
    dump: str | None = None
    date: str | None = None
    file_path: str | None = None
    language: str | None = None
    language_score: float | None = None
    html: str | None = None


def bump(stats: dict, key: str, n: int = 1) -> None:
    stats[key] = stats.get(key, 0) + n


def decode_bytes(raw: bytes, declared: str | None = None) -> tuple[str, str]:
    """Bytes → (text, encoding used). The declared charset if it decodes cleanly, then UTF-8,
    cp1252 (what old web pages and BBC files are really in when they claim latin-1), and latin-1
    last, which cannot fail."""
    for enc in ([declared] if declared else []) + ["utf-8", "cp1252", "latin-1"]:
        try:
            return raw.decode(enc), enc
        except (UnicodeDecodeError, LookupError):
            continue
    raise AssertionError("latin-1 decodes every byte string")


def read_text_file(path: Path) -> tuple[str, str]:
    return decode_bytes(Path(path).read_bytes())


def html_charset(raw: bytes, content_type: str | None = None) -> str | None:
    """The charset an HTTP header or the page's own <meta> declares, if any."""
    if content_type and (m := _HEADER_CHARSET.search(content_type)):
        return m.group(1).lower()
    if m := _META_CHARSET.search(raw[:4096]):
        return m.group(1).decode("ascii").lower()
    return None


def _decoded(raw: bytes, stats: dict, declared: str | None = None) -> str:
    text, enc = decode_bytes(raw, declared)
    if enc != (declared or "utf-8"):
        bump(stats, f"read_decoded_as_{enc}")
    return text


def _too_big(n_bytes: int, stats: dict) -> bool:
    if n_bytes > MAX_DOC_BYTES:
        bump(stats, "read_too_large")
        return True
    return False


def read_warc(path: Path, stats: dict) -> Iterator[Document]:
    """WARC `response` records with an HTML payload, and WET `conversion` records (already text).
    A truncated or corrupt archive yields every record before the damage."""
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    with open(path, "rb") as f:
        try:
            # Digests are how a cut-off record shows: warcio ends a truncated gzip stream without an error.
            for record in ArchiveIterator(f, check_digests=True):
                if record.rec_type not in ("response", "conversion"):
                    continue
                url = record.rec_headers.get_header("WARC-Target-URI")
                rid = record.rec_headers.get_header("WARC-Record-ID") or f"{path}#{url}"
                date = record.rec_headers.get_header("WARC-Date")
                content_type = None
                if record.rec_type == "response":
                    content_type = record.http_headers.get_header("Content-Type") if record.http_headers else None
                    # Common Crawl's sniffed type first: servers mislabel, and binaries often say text/html
                    mime = record.rec_headers.get_header("WARC-Identified-Payload-Type") or content_type or ""
                    if mime.split(";")[0].strip().lower() not in HTML_TYPES:
                        bump(stats, "read_not_html")
                        continue
                raw = record.content_stream().read(MAX_DOC_BYTES + 1)
                if _too_big(len(raw), stats):
                    continue
                checked = record.digest_checker.passed
                if checked is False or (checked is None and record.rec_headers.get_header("WARC-Block-Digest")):
                    bump(stats, "read_truncated_archive")
                    continue
                if not raw.strip():
                    bump(stats, "read_empty_record")
                    continue
                doc = Document(text="", id=rid.strip("<>"), url=url, date=date, file_path=str(path))
                if record.rec_type == "conversion":
                    doc.text = _decoded(raw, stats)
                else:
                    doc.html = _decoded(raw, stats, html_charset(raw, content_type))
                yield doc
        except (ArchiveLoadFailed, EOFError, OSError, zlib.error, ValueError):
            bump(stats, "read_truncated_archive")


def read_jsonl(path: Path, stats: dict) -> Iterator[Document]:
    """One JSON object per line with at least `text`; FineWeb's other columns are kept when present."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            for i, line in enumerate(f):
                if not line.strip():
                    continue
                if _too_big(len(line), stats):
                    continue
                try:
                    row = json.loads(_decoded(line, stats))
                    text = row["text"]
                    if not isinstance(text, str):
                        raise TypeError
                except (ValueError, KeyError, TypeError):
                    bump(stats, "read_bad_json_line")
                    continue
                yield _from_row(row, f"{path}#{i}", str(path))
    except (EOFError, OSError, zlib.error):
        bump(stats, "read_truncated_archive")


def _from_row(row: dict, default_id: str, file_path: str) -> Document:
    score = row.get("language_score")
    return Document(text=row["text"], id=str(row.get("id") or default_id), url=row.get("url"), dump=row.get("dump"),
                    date=str(row["date"]) if row.get("date") else None, file_path=row.get("file_path") or file_path,
                    language=row.get("language"), language_score=float(score) if score is not None else None)


def read_parquet(path: Path, stats: dict) -> Iterator[Document]:
    """FineWeb-schema parquet (any subset of its columns that includes `text`), a row group at a time."""
    try:
        pf = pq.ParquetFile(path)
    except (OSError, ValueError):
        bump(stats, "read_bad_parquet")
        return
    if "text" not in pf.schema_arrow.names:
        bump(stats, "read_parquet_without_text")
        return
    for g in range(pf.num_row_groups):
        for i, row in enumerate(pf.read_row_group(g).to_pylist()):
            if not isinstance(row["text"], str) or _too_big(len(row["text"]), stats):
                continue
            yield _from_row(row, f"{path}#{g}.{i}", str(path))


def read_single_file(path: Path, stats: dict, html: bool) -> Iterator[Document]:
    size = path.stat().st_size
    if size == 0:
        bump(stats, "read_empty_file")
        return
    if _too_big(size, stats):
        return
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:  # NUL bytes: an image or archive with a text-like name
        bump(stats, "read_binary_file")
        return
    if html:
        yield Document(text="", id=str(path), url=path.resolve().as_uri(), file_path=str(path),
                       html=_decoded(raw, stats, html_charset(raw)))
    else:
        yield Document(text=_decoded(raw, stats), id=str(path), file_path=str(path))


def file_kind(path: Path) -> str | None:
    name = path.name.lower()
    for kind, endings in (("warc", (".warc", ".warc.gz", ".wet", ".wet.gz", ".arc.gz")),
                          ("jsonl", (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")),
                          ("parquet", (".parquet",)), ("html", (".html", ".htm", ".xhtml")), ("text", (".txt",))):
        if name.endswith(endings):
            return kind
    return None


def read_file(path: Path, stats: dict) -> Iterator[Document]:
    path = Path(path)
    kind = file_kind(path)
    if kind is None:
        bump(stats, "read_unknown_file_type")
        return
    if kind != "html" and kind != "text" and path.stat().st_size == 0:
        bump(stats, "read_empty_file")
        return
    if kind == "warc":
        yield from read_warc(path, stats)
    elif kind == "jsonl":
        yield from read_jsonl(path, stats)
    elif kind == "parquet":
        yield from read_parquet(path, stats)
    else:
        yield from read_single_file(path, stats, html=kind == "html")


def expand_inputs(specs: list[str]) -> list[Path]:
    """Files, directories (walked recursively) and globs → a sorted, de-duplicated list of files."""
    out: set[Path] = set()
    for spec in specs:
        p = Path(spec)
        if any(c in spec for c in "*?["):
            anchor = Path(p.anchor or ".")
            matches = list(anchor.glob(str(p.relative_to(anchor)) if p.is_absolute() else spec))
            if not matches:
                raise UserError(f"no input matches {spec!r}")
            candidates = matches
        elif p.exists():
            candidates = [p]
        else:
            raise UserError(f"input {spec!r} does not exist")
        for c in candidates:
            if c.is_dir():
                out.update(f for f in c.rglob("*") if f.is_file())
            else:
                out.add(c)
    return sorted(out)


def write_warc(path: Path, pages: list[tuple[str, bytes, str]]) -> None:
    """(url, body, content type) → a gzipped WARC of HTTP response records, as Common Crawl writes them;
    how the tests and the benchmark turn local HTML into crawl input."""
    from io import BytesIO

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for url, body, content_type in pages:
            http = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
            mime = {"WARC-Identified-Payload-Type": content_type.split(";")[0].strip()}
            writer.write_record(writer.create_warc_record(url, "response", payload=BytesIO(body), http_headers=http,
                                                          warc_headers_dict=mime))
