"""Text out of an uploaded file, for the chat page to put into a user message: plain text and Markdown as they
are, HTML through the data pipeline's extractor, PDF through pypdf."""

import io
from pathlib import PurePath

from chatforge.errors import UserError

TEXT = {".txt", ".md", ".markdown", ".csv", ".tsv", ".json", ".jsonl", ".py", ".rst", ".log", ".yaml", ".yml"}
HTML = {".html", ".htm"}


class UnsupportedFile(UserError):
    """A file type the server cannot read text from (HTTP 415)."""


def extract_text(name: str, data: bytes, content_type: str = "") -> str:
    suffix = PurePath(name).suffix.lower()
    if suffix == ".pdf" or content_type == "application/pdf":
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError

        try:
            return "\n\n".join((page.extract_text() or "").strip() for page in PdfReader(io.BytesIO(data)).pages)
        except (PyPdfError, ValueError, KeyError) as e:
            raise UserError(f"{name}: not a readable PDF ({e})") from None
    if suffix in HTML or content_type == "text/html":
        from chatforge.data.extract import Extract

        return Extract().fn(data.decode("utf-8", errors="replace")).strip()
    if suffix in TEXT or content_type.startswith("text/"):
        return data.decode("utf-8", errors="replace")
    raise UnsupportedFile(f"{name}: cannot read text from this type of file; send text, Markdown, HTML or PDF")
