"""Our tiktoken tokenizer <-> a Hugging Face tokenizer.json with identical ids, both ways (plain JSON: no
dependency on the `tokenizers` package, which only the tests use to check the files)."""

import json
from itertools import pairwise
from pathlib import Path

import tiktoken

from chatforge.errors import UserError
from chatforge.tokenizer.bpe import Tokenizer


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable char table: tokenizer.json stores byte-level tokens as strings in this alphabet."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + n)
    return table


def last_merge(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes] | None:
    """The pair tiktoken merges last when it encodes `token` on its own, or None if it never reaches `token`.
    Any token tiktoken builds inside a longer piece is built by exactly this merge (merges never cross its
    boundary), so one merge rule per token reproduces tiktoken. Running with the full vocabulary rather than only
    lower ranks also covers the rare token whose final pair includes a higher-ranked part."""
    parts = [bytes([b]) for b in token]
    pair = None
    while len(parts) > 1:
        pairs = [(ranks[a + b], i) for i, (a, b) in enumerate(pairwise(parts)) if a + b in ranks]
        if not pairs:
            return None  # only reachable as a whole pre-token, which ignore_merges handles
        _, i = min(pairs)  # lowest rank, leftmost on ties: tiktoken's order
        pair = parts[i], parts[i + 1]
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return pair


def hf_tokenizer_json(tok: Tokenizer) -> dict:
    ranks: dict[bytes, int] = tok.enc._mergeable_ranks
    byte_char = bytes_to_unicode()
    to_str = lambda b: "".join(byte_char[x] for x in b)
    vocab = {to_str(token): rank for token, rank in ranks.items()}  # ids are ranks; bytes 0..255 need not be in order
    merges = []
    for token, _ in sorted(ranks.items(), key=lambda kv: kv[1]):  # list position is merge priority, as rank is
        pair = last_merge(ranks, token) if len(token) > 1 else None
        if pair is not None:
            merges.append(f"{to_str(pair[0])} {to_str(pair[1])}")  # byte-level strings never contain a space
    added = [{"id": i, "content": name, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for name, i in sorted(tok.enc._special_tokens.items(),
                                                                          key=lambda kv: kv[1])]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        # Our regex does the splitting (onig accepts its possessive quantifiers); ByteLevel then only maps bytes.
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": tok.enc._pat_str}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ]},
        "post_processor": None,  # no BOS: like tok.encode, callers add <|endoftext|> themselves
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            # tiktoken returns a pre-token found whole in the vocab without merging (as Llama 3's export does)
            "ignore_merges": True,
            "vocab": vocab, "merges": merges,
        },
    }


def save_hf_tokenizer(tok: Tokenizer, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(hf_tokenizer_json(tok), ensure_ascii=False) + "\n", encoding="utf-8")


# GPT-2's split, which a ByteLevel pre-tokenizer with use_regex applies (GPT-2, RoBERTa, many BPEs trained with
# the `tokenizers` package); Llama 3 and Qwen put their own regex in a Split step instead.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _split_pattern(pre: dict | None) -> str:
    """The regex tiktoken needs from a pre_tokenizer: Split(Regex, Isolated) then ByteLevel, or ByteLevel's own."""
    steps = (pre or {}).get("pretokenizers") or ([pre] if pre else [])
    kinds = [s["type"] for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True) and not steps[0].get("add_prefix_space"):
        return GPT2_PATTERN
    if (kinds == ["Split", "ByteLevel"] and "Regex" in steps[0]["pattern"] and steps[0].get("behavior") == "Isolated"
            and not steps[0].get("invert") and not steps[1].get("use_regex") and not steps[1].get("add_prefix_space")):
        return steps[0]["pattern"]["Regex"]
    raise UserError(f"pre-tokenizer {' + '.join(kinds) or 'none'}: only a byte-level BPE split by one regex "
                    f"(Split + ByteLevel, or ByteLevel with GPT-2's regex) converts to tiktoken")


def _check_merges(merges: list, ranks: dict[bytes, int], to_bytes) -> None:
    """tiktoken merges the adjacent pair whose result has the lowest rank (id); HF the pair listed first. So the
    list must be in id order of the results. (A part may rank above its result: our own export writes such merges
    for the rare token tiktoken builds that way, see last_merge.)"""
    last = -1
    for m in merges:
        a, b = (m.split(" ") if isinstance(m, str) else m)  # "a b" (older files) or ["a", "b"]
        a, b = to_bytes(a), to_bytes(b)
        rank = ranks.get(a + b)
        if rank is None or a not in ranks or b not in ranks:
            raise UserError(f"merge {m!r} names a token that is not in the vocabulary")
        if rank < last:
            raise UserError(f"merge {m!r} makes id {rank} after a merge made id {last}: tiktoken merges in id "
                            f"order, so it would encode differently")
        last = rank


def load_hf_tokenizer(hf_dir: Path) -> Tokenizer:
    """A byte-level BPE tokenizer.json (GPT-2, Llama 3, Qwen2/3, our own export) as a chatforge Tokenizer with the
    same ids. Added tokens become special tokens, produced from structure only (docs/design.md). chatforge's
    document boundary is `<|endoftext|>`; a tokenizer without one (Llama 3) has its BOS token (config.json's
    bos_token_id, else eos_token_id) renamed to it, same id. The chat and tool tokens are not added: pretraining
    needs none, SFT needs them all (new embedding rows, not built yet)."""
    hf_dir = Path(hf_dir)
    path = hf_dir / "tokenizer.json"
    if not path.exists():
        raise UserError(f"no tokenizer.json in {hf_dir}")
    d = json.loads(path.read_text(encoding="utf-8"))
    try:
        model = d.get("model") or {}
        if model.get("type", "BPE") != "BPE" or model.get("byte_fallback") or (d.get("decoder") or {}).get(
                "type") != "ByteLevel":
            raise UserError(f"{model.get('type')} model with a {(d.get('decoder') or {}).get('type')} decoder: "
                            f"only byte-level BPE converts to tiktoken")
        if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
            raise UserError("subword prefixes or word suffixes: tiktoken's tokens are plain bytes")
        if (d.get("normalizer") or {}).get("type") not in (None, "NFC"):
            raise UserError(f"normalizer {d['normalizer']['type']}: tiktoken does not normalize text")
        pattern = _split_pattern(d.get("pre_tokenizer"))
        char_byte = {c: b for b, c in bytes_to_unicode().items()}

        def to_bytes(s: str) -> bytes:
            return bytes(char_byte[c] for c in s)

        specials = {t["content"]: t["id"] for t in d.get("added_tokens", [])}
        try:
            ranks = {to_bytes(s): i for s, i in model.get("vocab", {}).items() if s not in specials}
        except KeyError:
            raise UserError("the vocabulary has a token outside the byte-level alphabet") from None
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            raise UserError(f"the vocabulary lacks {len(missing)} of the 256 single bytes (e.g. {missing[0]})")
        _check_merges(model.get("merges", []), ranks, to_bytes)
        ids = sorted([*ranks.values(), *specials.values()])
        if ids != list(range(len(ids))):
            raise UserError("token ids are not 0..N-1 without gaps or repeats")
        if "<|endoftext|>" not in specials:
            config = json.loads((hf_dir / "config.json").read_text()) if (hf_dir / "config.json").exists() else {}
            bos = next((i for i in (config.get("bos_token_id"), config.get("eos_token_id")) if i is not None), None)
            bos = bos[0] if isinstance(bos, list) else bos
            name = next((n for n, i in specials.items() if i == bos), None)
            if name is None:
                raise UserError("no <|endoftext|> among the added tokens and no config.json bos_token_id naming "
                                "one to use as chatforge's document boundary")
            print(f"{path}: {name} (id {bos}) is chatforge's document boundary <|endoftext|>")
            specials["<|endoftext|>"] = specials.pop(name)
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    if d.get("normalizer"):
        print(f"{path}: its NFC normalizer is not applied; ids match on NFC text (almost all text) only")
    return Tokenizer(tiktoken.Encoding(name=hf_dir.name, pat_str=pattern, mergeable_ranks=ranks,
                                       special_tokens=specials))
