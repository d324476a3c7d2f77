"""HTML → main text. resiliparse by default (a C++ DOM walk, 20-30x trafilatura's speed, and the
extractor behind the DCLM corpus); trafilatura, the extractor of FineWeb, when asked for and installed."""

from chatforge.data.readers import Document
from chatforge.errors import UserError


class Extract:
    """The extract step: a document with `html` gets its main text, navigation and boilerplate removed."""

    name = "extract"

    def __init__(self, backend: str = "resiliparse"):
        if backend == "resiliparse":
            from resiliparse.extract.html2text import extract_plain_text

            # main_content drops nav bars, headers, footers and sidebars; comments and alt texts are not prose.
            self.fn = lambda html: extract_plain_text(html, main_content=True, alt_texts=False, comments=False)
        elif backend == "trafilatura":
            try:
                import trafilatura
            except ImportError:
                raise UserError("data.extractor=trafilatura needs `pip install trafilatura`") from None
            self.fn = lambda html: trafilatura.extract(html, favor_precision=True, include_comments=False) or ""
        else:
            raise UserError(f"unknown data.extractor {backend!r}; choose resiliparse or trafilatura")

    def __call__(self, doc: Document) -> str | None:
        if doc.html is None:
            return None  # already text (WET, JSONL, parquet, .txt)
        try:
            doc.text = self.fn(doc.html).strip()
        except Exception:  # a parser crash on one malformed page must not stop the shard
            return "extract_failed"
        finally:
            doc.html = None
        return None if doc.text else "extract_empty"
