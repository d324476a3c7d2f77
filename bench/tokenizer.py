"""Tokenizer speed on ~75 MB of real text, every contender at its best thread count, in one run:

- training MB/s: chatforge's train_tokenizer vs raw rustbpe vs HF tokenizers' BpeTrainer (same regex,
  same vocabulary size);
- encoding MB/s: chatforge's Tokenizer.encode_batch vs raw tiktoken vs HF `encode_batch` on our
  tokenizer.json (identical ids);
- shard building (encode + pack + write .bin) with 2 processes vs 1.

Text: the sample corpus (BBC news, Shakespeare), the reStructuredText sources of the Python and Linux
kernel manuals and the Debian Administrator's Handbook in its languages (Debian packages, installed
when missing and running as root). Each measurement runs in a fresh process, so rayon's thread pool
(rustbpe, HF) takes the thread count we give it and one run's memory cannot slow the next.

    .venv/bin/python bench/tokenizer.py            # ~75 MB, threads 1 and 2, best of 2
    .venv/bin/python bench/tokenizer.py --quick    # ~8 MB, 2 threads, one try: under 2 minutes

The last line is JSON with the ratios (chatforge over the other) and MB/s.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bench-tokenizer"
PACKAGES = {"python3.11-doc": "/usr/share/doc/python3.11/html/_sources",
            "linux-doc-6.1": "/usr/share/doc/linux-doc-6.1/html/_sources",
            "debian-handbook": "/usr/share/doc/debian-handbook/html"}


def ensure_packages() -> list[str]:
    """Install the documentation packages that are missing (root only); returns those still missing."""
    missing = [p for p, d in PACKAGES.items() if not Path(d).exists()]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {' '.join(missing)} ...", file=sys.stderr)
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300", *missing]
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(cmd, env=env, capture_output=True)
    return [p for p, d in PACKAGES.items() if not Path(d).exists()]


def source_texts() -> dict[str, list[str]]:
    from chatforge.data.samples import sample_corpus

    sources = {"sample": [d.text for d in sample_corpus({})]}
    for name in ("python3.11-doc", "linux-doc-6.1"):
        paths = sorted(Path(PACKAGES[name]).rglob("*.txt")) if Path(PACKAGES[name]).exists() else []
        sources[name] = [p.read_text(encoding="utf-8", errors="replace") for p in paths]
    sources["debian-handbook"] = handbook_texts(Path(PACKAGES["debian-handbook"]))
    return {k: v for k, v in sources.items() if v}


def handbook_texts(root: Path) -> list[str]:
    """The handbook's pages (every language) as text, through the data stage's HTML extraction."""
    if not root.exists():
        return []
    from chatforge.data.extract import Extract
    from chatforge.data.readers import read_file

    extract, texts = Extract(), []
    for path in sorted(root.rglob("*.html")):
        for doc in read_file(path, {}):
            if extract(doc) is None:  # None: kept, with its main text
                texts.append(doc.text)
    return texts


def build_corpus(target_mb: float) -> Path:
    """Documents from every source, shuffled with a fixed seed, cut at target_mb; cached as parquet."""
    path = WORK / f"corpus-{target_mb:g}mb.parquet"
    if path.exists():
        return path
    missing = ensure_packages()
    texts = [t for v in source_texts().values() for t in v]
    random.Random(0).shuffle(texts)
    out, size = [], 0
    for t in texts:
        if size >= target_mb * 1e6:
            break
        out.append(t)
        size += len(t.encode())
    if size < 0.9 * target_mb * 1e6:
        print(f"warning: only {size / 1e6:.1f} MB of text (missing packages: {missing})", file=sys.stderr)
    WORK.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": out}), path)
    return path


def measure(kind: str, threads: int, corpus: Path, vocab: int, tok_dir: Path) -> float:
    """Seconds for one `kind` of work on the whole corpus, measured in this process."""
    texts = pq.read_table(corpus).column("text").to_pylist()
    if kind == "train_chatforge":
        from chatforge.tokenizer.bpe import train_tokenizer
        from chatforge.tokenizer.hf import save_hf_tokenizer

        t0 = time.perf_counter()
        tok = train_tokenizer(texts, vocab)
        seconds = time.perf_counter() - t0
        tok.save(tok_dir)
        save_hf_tokenizer(tok, tok_dir / "tokenizer.json")
        return seconds
    if kind == "train_rustbpe":
        import rustbpe

        from chatforge.tokenizer.bpe import SPECIAL_TOKENS, SPLIT_PATTERN

        t0 = time.perf_counter()
        rustbpe.Tokenizer().train_from_iterator(iter(texts), vocab - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
        return time.perf_counter() - t0
    if kind == "train_hf":
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

        from chatforge.tokenizer.bpe import SPECIAL_TOKENS, SPLIT_PATTERN

        hf = Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        t0 = time.perf_counter()
        hf.train_from_iterator(texts, trainer)
        return time.perf_counter() - t0
    if kind == "encode_chatforge":
        from chatforge.tokenizer.bpe import load_tokenizer

        tok = load_tokenizer(tok_dir)
        t0 = time.perf_counter()
        tok.encode_batch(texts, num_threads=threads)
        return time.perf_counter() - t0
    if kind == "encode_tiktoken":
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe

        meta = json.loads((tok_dir / "special_tokens.json").read_text())
        enc = tiktoken.Encoding(name="raw", pat_str=meta["pattern"], special_tokens=meta["special_tokens"],
                                mergeable_ranks=load_tiktoken_bpe(str(tok_dir / "tokenizer.tiktoken")))
        t0 = time.perf_counter()
        enc.encode_ordinary_batch(texts, num_threads=threads)
        return time.perf_counter() - t0
    if kind == "encode_hf":
        from tokenizers import Tokenizer

        hf = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
        t0 = time.perf_counter()
        hf.encode_batch(texts, add_special_tokens=False)
        return time.perf_counter() - t0
    if kind == "shards":
        from chatforge.tokenizer.shards import encode_to_shards

        out = WORK / f"shards-{threads}"
        t0 = time.perf_counter()
        encode_to_shards(texts, tok_dir, out, "train", workers=threads, progress=False)
        seconds = time.perf_counter() - t0
        shutil.rmtree(out)
        return seconds
    raise ValueError(f"unknown measurement {kind!r}")


def run_measure(kind: str, threads: int, corpus: Path, vocab: int, tok_dir: Path) -> float:
    # rayon (rustbpe, HF tokenizers) sizes its pool once per process from this variable
    env = os.environ | {"RAYON_NUM_THREADS": str(threads), "RAYON_RS_NUM_CPUS": str(threads)}
    cmd = [sys.executable, __file__, "--measure", kind, "--threads", str(threads), "--corpus", str(corpus),
           "--vocab", str(vocab), "--tok-dir", str(tok_dir)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} with {threads} threads failed:\n{proc.stderr}")
    return float(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="~8 MB, 2 threads, one try (under 2 minutes)")
    ap.add_argument("--mb", type=float, help="corpus size in MB (default 75, quick 8)")
    ap.add_argument("--vocab", type=int, default=16384, help="vocabulary size, specials included")
    ap.add_argument("--repeats", type=int, help="tries per measurement, best kept (default 2, quick 1)")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--tok-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:  # child process: one measurement, seconds on the last line
        print(measure(args.measure, args.threads, args.corpus, args.vocab, args.tok_dir))
        return

    mb = args.mb or (8 if args.quick else 75)
    repeats = args.repeats or (1 if args.quick else 2)
    thread_counts = [os.cpu_count() or 1] if args.quick else sorted({1, os.cpu_count() or 1})
    corpus = build_corpus(mb)
    n_bytes = sum(len(t.encode()) for t in pq.read_table(corpus).column("text").to_pylist())
    tok_dir = WORK / f"tok-{mb:g}mb-{args.vocab}"
    print(f"corpus: {n_bytes / 1e6:.1f} MB in {pq.read_metadata(corpus).num_rows:,} documents, vocab {args.vocab}, "
          f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)

    groups = [("train", ["train_chatforge", "train_rustbpe", "train_hf"], thread_counts),
              ("encode", ["encode_chatforge", "encode_tiktoken", "encode_hf"], thread_counts),
              ("shards", ["shards"], sorted({1, 2}))]
    best: dict[tuple[str, int], float] = {}
    for _, kinds, threads in groups:
        for _ in range(repeats):  # contenders alternate, so slow spells of a noisy machine hit them alike
            for n in threads:
                for kind in kinds:
                    s = run_measure(kind, n, corpus, args.vocab, tok_dir)
                    best[kind, n] = min(best.get((kind, n), float("inf")), s)
                    print(f"  {kind:17s} threads={n}: {s:7.2f} s  {n_bytes / 1e6 / s:6.2f} MB/s", file=sys.stderr)

    def mb_s(kind: str) -> float:  # at the contender's best thread count
        return max(n_bytes / 1e6 / s for (k, _), s in best.items() if k == kind)

    result = {
        "corpus_mb": round(n_bytes / 1e6, 1), "vocab": args.vocab,
        "train_vs_rustbpe": round(mb_s("train_chatforge") / mb_s("train_rustbpe"), 3),
        "train_vs_hf": round(mb_s("train_chatforge") / mb_s("train_hf"), 3),
        "encode_vs_tiktoken": round(mb_s("encode_chatforge") / mb_s("encode_tiktoken"), 3),
        "encode_vs_hf": round(mb_s("encode_chatforge") / mb_s("encode_hf"), 3),
        "shard_parallel_speedup": round(best["shards", 1] / best["shards", 2], 3),
        **{f"{k}_mb_s": round(mb_s(k), 2) for k, _ in best},
        "shards_1proc_mb_s": round(n_bytes / 1e6 / best["shards", 1], 2),
        "load_avg": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
