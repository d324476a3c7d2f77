"""Raw inputs → `Document`s. Text decoding that never loses a file: bad bytes are counted, not fatal."""

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Document:
    """One document, with FineWeb's column names so parquet output is a drop-in FineWeb shard."""

    text: str
    id: str
    url: str | None = None
    dump: str | None = None
    date: str | None = None
    file_path: str | None = None
    language: str | None = None
    language_score: float | None = None


def decode_bytes(raw: bytes) -> tuple[str, str]:
    """Bytes → (text, encoding used). UTF-8 first; cp1252 (what old web pages and BBC files are
    really in when they claim latin-1); latin-1 last, which cannot fail."""
    for enc in ("utf-8", "cp1252", "latin-1"):
        try:
            return raw.decode(enc), enc
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte string")


def read_text_file(path: Path) -> tuple[str, str]:
    return decode_bytes(Path(path).read_bytes())
