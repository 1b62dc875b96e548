"""WARC → curated documents: our ml/ stages vs datatrove 0.10.1's equivalent pipeline, same WARC files, one run.

    PYTHONPATH=. python benchmarks/curation.py [--warc GLOB ...] [--limit N] [--workers 2]
        [--skip-datatrove] [--profile [N]]

Input: the response records of ``--warc`` (default: the local-web crawl of ``make run``), repacked into
``--workers`` gzip WARC files of about equal size (greedy by compressed bytes, record order kept; raw gzip
members copied, so every record's bytes are unchanged). Both sides read these files: datatrove shards a
run by file, and the crawl's own files are 87% / 13% of the records, which would leave one of its two tasks
idle most of the time. ``--limit N`` keeps the first N response records (a smoke run).

What is compared ("WARC to curated documents"):
- ``datatrove``: ``WarcReader`` → ``Trafilatura`` → ``GopherRepetitionFilter`` → ``GopherQualityFilter`` →
  ``JsonlWriter``, then MinHash in its four stages (signatures, buckets, clusters, filter), each stage on a
  ``LocalPipelineExecutor(tasks=W, workers=W)`` (the buckets stage: one task per bucket). Words are split on
  whitespace (``WordTokenizer`` below; its English default is spaCy, not installed here, and our rules count
  whitespace words). No language id: its ``LanguageFilter`` downloads a fastText model, and this machine is
  offline. Trafilatura runs with our settings (recall, tables, no deduplicate) in its sandbox process.
- ``ours core``: ``iter_many`` → ``extract_documents`` (trafilatura + lxml fallback + py3langid) →
  ``minhash_dedup`` → ``heuristic_filter`` (the Gopher rules plus dirty words and the KL outlier rule),
  tiny preset, as the assets run them but called directly (no Dagster). Extraction runs on a Dask
  LocalCluster of W single-threaded worker processes (the asset's ``DaskResource`` default); the cluster
  start is timed too.
- ``ours full``: the whole data path of ``make run`` up to ``filtered_docs``: extraction, URL filter, URL
  dedup, boilerplate, PII, MinHash, line dedup, filters (the extra stages each on their own row).

docs/s = WARC response records in / wall seconds, the same denominator on both sides. ``digest`` is the
sha1 of the kept documents' ``id\\ttext`` lines after a stage: two runs (code before/after a change) that
print the same digests produced the same documents. ``--profile N`` runs our stages in this process under
cProfile (no cluster) and prints each stage's top N functions by cumulative time.

datatrove's ``WarcReader`` imports ``cchardet`` and ``magic``: the dev extra installs them
(``faust-cchardet``, ``python-magic``) with datatrove.
"""

from __future__ import annotations

import argparse
import cProfile
import glob
import hashlib
import inspect
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ml.curate.boilerplate import BoilerplateConfig, remove_boilerplate  # noqa: E402
from ml.curate.filters import FilterConfig, heuristic_filter  # noqa: E402
from ml.curate.line_dedup import LineDedupConfig, line_dedup  # noqa: E402
from ml.curate.minhash import MinHashConfig, minhash_dedup  # noqa: E402
from ml.curate.pii import PiiConfig, redact_pii  # noqa: E402
from ml.curate.steps import StepResult  # noqa: E402
from ml.curate.url_dedup import UrlDedupConfig, url_dedup  # noqa: E402
from ml.curate.url_filter import UrlFilterConfig, filter_urls  # noqa: E402
from ml.sources.extract import ExtractConfig, extract_documents  # noqa: E402
from ml.sources.warc import iter_many  # noqa: E402

DEFAULT_WARC = "/tmp/run-b/data/raw_crawl/local-web/crawl-*.warc.gz"
PRESET = "tiny"  # what `make run` materializes


# ---------------------------------------------------------------------------------------------- input


def repack(paths: list[Path], out_dir: Path, n_files: int, limit: int | None) -> tuple[list[Path], int]:
    """Copy the response records (raw gzip members) of ``paths`` into ``n_files`` WARC files of about equal
    compressed size, record order kept; returns the files and the number of records."""
    from warcio.archiveiterator import ArchiveIterator

    out_dir.mkdir(parents=True, exist_ok=True)
    outs = [out_dir / f"part-{i:05d}.warc.gz" for i in range(max(n_files, 1))]
    handles = [open(p, "wb") for p in outs]
    sizes, n = [0] * len(outs), 0
    try:
        for path in paths:
            with open(path, "rb") as fh:
                it = ArchiveIterator(fh)
                for rec in it:
                    is_response = rec.rec_type == "response"
                    it.read_to_end(rec)
                    if not is_response or (limit is not None and n >= limit):
                        continue
                    start, length = it.get_record_offset(), it.get_record_length()
                    pos = fh.tell()
                    fh.seek(start)
                    member = fh.read(length)
                    fh.seek(pos)
                    i = sizes.index(min(sizes))
                    handles[i].write(member)
                    sizes[i] += length
                    n += 1
    finally:
        for h in handles:
            h.close()
    return [p for p, s in zip(outs, sizes, strict=True) if s > 0], n


def digest(df: pd.DataFrame) -> str:
    """sha1 of the documents' ``id\\ttext`` lines, in row order (12 hex chars)."""
    h = hashlib.sha1()
    for doc_id, text in zip(df["id"].astype(str), df["text"].astype(str), strict=True):
        h.update(f"{doc_id}\t{text}\n".encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:12]


# ---------------------------------------------------------------------------------------------- ours


class Stages:
    """Times (and optionally profiles) each stage; keeps each stage's kept count and digest."""

    def __init__(self, profile_top: int = 0):
        self.rows: list[dict] = []
        self.profile_top = profile_top

    def run(self, name: str, fn: Callable[[], StepResult | None]) -> StepResult | None:
        prof = cProfile.Profile() if self.profile_top else None
        t0 = time.perf_counter()
        if prof is not None:
            prof.enable()
        out = fn()
        if prof is not None:
            prof.disable()
        seconds = time.perf_counter() - t0
        kept = out.kept if isinstance(out, StepResult) else None
        self.rows.append({"stage": name, "seconds": seconds, "kept": None if kept is None else len(kept),
                          "digest": None if kept is None else digest(kept)})  # fmt: skip
        if prof is not None:
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(self.profile_top)
            print(f"\n=== profile: {name} ({seconds:.2f} s)\n" + _trim_profile(buf.getvalue()))
        return out

    def seconds(self, *names: str) -> float:
        return sum(r["seconds"] for r in self.rows if r["stage"] in names)


def _trim_profile(text: str) -> str:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("ncalls")), 0)
    return "\n".join(line.replace(str(Path(sys.prefix)), "<venv>") for line in lines[start:] if line.strip())


def start_cluster(workers: int):
    """A Dask LocalCluster of ``workers`` single-threaded processes and its client (None for 0 workers)."""
    if workers <= 0:
        return None, None
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    return cluster, Client(cluster)


def run_ours(warcs: list[Path], workers: int, profile_top: int = 0) -> Stages:
    """Our stages in pipeline order; the core path reads extraction, MinHash and filters off the same rows."""
    cfgs = {c.__name__: c.from_preset(PRESET) for c in (ExtractConfig, UrlFilterConfig, UrlDedupConfig,
            BoilerplateConfig, PiiConfig, MinHashConfig, LineDedupConfig, FilterConfig)}  # fmt: skip
    st = Stages(profile_top)
    holder: dict = {}
    workers = workers if parallel_extraction() else 0
    st.run(
        "cluster start",
        lambda: holder.update(zip(("cluster", "client"), start_cluster(workers), strict=True)),
    )
    try:
        errors: list = []
        ext = st.run(
            "read+extract+langid", lambda: _extract(warcs, cfgs["ExtractConfig"], holder["client"], errors)
        )
    finally:
        if holder.get("client") is not None:
            holder["client"].close()
            holder["cluster"].close()
    docs = ext.kept
    # core: MinHash then the filters, straight after extraction
    mh = st.run("core: minhash", lambda: minhash_dedup(docs, cfgs["MinHashConfig"]))
    st.run("core: filters", lambda: heuristic_filter(mh.kept, cfgs["FilterConfig"]))
    # full: every step of make run's data path, in its order
    out = st.run("url filter", lambda: filter_urls(docs, cfgs["UrlFilterConfig"]))
    out = st.run("url dedup", lambda: url_dedup(out.kept, cfgs["UrlDedupConfig"]))
    out = st.run("boilerplate", lambda: remove_boilerplate(out.kept, cfgs["BoilerplateConfig"]))
    out = st.run("pii", lambda: redact_pii(out.kept, cfgs["PiiConfig"]))
    out = st.run("full: minhash", lambda: minhash_dedup(out.kept, cfgs["MinHashConfig"]))
    out = st.run("line dedup", lambda: line_dedup(out.kept, cfgs["LineDedupConfig"]))
    st.run("full: filters", lambda: heuristic_filter(out.kept, cfgs["FilterConfig"]))
    return st


def _extract(warcs: list[Path], cfg: ExtractConfig, client, errors: list) -> StepResult:
    records = iter_many(warcs, errors, max_payload_bytes=cfg.max_payload_bytes)
    if client is None:
        return extract_documents(records, cfg, source="crawl")
    return extract_documents(records, cfg, source="crawl", client=client)


def parallel_extraction() -> bool:
    """Whether ``extract_documents`` takes a Dask client (older code extracts in one process only)."""
    return "client" in inspect.signature(extract_documents).parameters


# ---------------------------------------------------------------------------------------------- datatrove


def _whitespace_tokenizer():
    from datatrove.utils.word_tokenizers import WordTokenizer

    class WhitespaceWords(WordTokenizer):
        """Words as Gopher and our filters count them: split on whitespace."""

        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    return WhitespaceWords()


def _xxh64_utf8(text: str) -> int:
    import xxhash

    return xxhash.xxh64_intdigest(text.encode("utf-8"))


def run_datatrove(warc_dir: Path, work: Path, workers: int) -> dict:
    """datatrove's pipeline; returns per-stage seconds and the documents out."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.writers import JsonlWriter

    class Signature(MinhashDedupSignature):
        """datatrove's xxhash shingle hash, fed bytes: xxhash >= 4 no longer encodes a str itself."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._hash_func = _xxh64_utf8

    words, mh = _whitespace_tokenizer(), MinhashConfig()
    extract = Trafilatura(favour_precision=False, favor_recall=True, include_tables=True, deduplicate=False,
                          timeout=10.0)  # fmt: skip
    stages = {
        "read+extract+gopher": (
            [
                WarcReader(str(warc_dir), glob_pattern="*.warc.gz"),
                extract,
                GopherRepetitionFilter(language=words),
                GopherQualityFilter(language=words),
                JsonlWriter(str(work / "filtered")),
            ],
            workers,
        ),  # fmt: skip
        "minhash signatures": (
            [JsonlReader(str(work / "filtered")), Signature(str(work / "sigs"), config=mh, language=words)],
            workers,
        ),  # fmt: skip
        "minhash buckets": (
            [MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=mh)],
            mh.num_buckets,
        ),  # fmt: skip
        "minhash clusters": (
            [MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=mh)],
            1,
        ),
        "minhash filter": (
            [
                JsonlReader(str(work / "filtered")),
                MinhashDedupFilter(str(work / "remove")),
                JsonlWriter(str(work / "deduped")),
            ],
            workers,
        ),  # fmt: skip
    }
    times = {}
    for name, (pipeline, tasks) in stages.items():
        executor = LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(workers, tasks),
                                         logging_dir=str(work / "logs" / name.replace(" ", "_")))  # fmt: skip
        t0 = time.perf_counter()
        executor.run()
        times[name] = time.perf_counter() - t0
    return {"times": times, "filtered": _count_docs(work / "filtered"), "kept": _count_docs(work / "deduped")}


def _count_docs(folder: Path) -> int:
    import gzip

    return sum(sum(1 for _ in gzip.open(p, "rt")) for p in sorted(folder.glob("*.jsonl.gz")))


# ---------------------------------------------------------------------------------------------- report


def report(n: int, warcs: list[Path], ours: Stages | None, theirs: dict | None, workers: int) -> str:
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines = [f"input: {n} WARC response records in {len(warcs)} files; workers {workers}; {os.cpu_count()} cpus",
             f"load: {load}", ""]  # fmt: skip
    rows: list[tuple[str, str, float, int | str]] = []
    if theirs is not None:
        rows.append(
            ("datatrove", "read+extract+gopher+minhash", sum(theirs["times"].values()), theirs["kept"])
        )
    if ours is not None:
        core = ("cluster start", "read+extract+langid", "core: minhash", "core: filters")
        full = ("cluster start", "read+extract+langid", "url filter", "url dedup", "boilerplate", "pii",
                "full: minhash", "line dedup", "full: filters")  # fmt: skip
        kept = {r["stage"]: r["kept"] for r in ours.rows}
        rows.append(
            ("ours core", "read+extract+langid+minhash+filters", ours.seconds(*core), kept["core: filters"])
        )
        rows.append(("ours full", "core + url filter/dedup, boilerplate, pii, line dedup", ours.seconds(*full),
                     kept["full: filters"]))  # fmt: skip
    base = rows[0][2] if theirs is not None else None
    lines.append(
        f"{'side':<10} {'stages':<54} {'seconds':>8} {'docs/s':>8} {'docs out':>8} {'vs datatrove':>12}"
    )
    for side, stages, sec, kept in rows:
        vs = f"{base / sec:.2f}x" if base else "-"
        lines.append(f"{side:<10} {stages:<54} {sec:8.2f} {n / sec:8.1f} {kept:>8} {vs:>12}")
    if theirs is not None:
        lines += ["", "datatrove stages:"]
        lines += [f"  {k:<28} {v:8.2f} s" for k, v in theirs["times"].items()]
        lines.append(f"  docs after gopher filters: {theirs['filtered']}, after minhash: {theirs['kept']}")
    if ours is not None:
        lines += ["", "our stages:"]
        for r in ours.rows:
            kept = "" if r["kept"] is None else f"{r['kept']:>6} kept  digest {r['digest']}"
            lines.append(f"  {r['stage']:<28} {r['seconds']:8.2f} s  {kept}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warc", nargs="+", default=[DEFAULT_WARC], help="WARC files or globs")
    ap.add_argument("--limit", type=int, default=None, help="first N response records only (smoke run)")
    ap.add_argument("--workers", type=int, default=2, help="processes on each side (both: this many)")
    ap.add_argument("--skip-datatrove", action="store_true")
    ap.add_argument("--skip-ours", action="store_true")
    ap.add_argument("--profile", type=int, nargs="?", const=25, default=0,
                    help="profile our stages in process (no cluster), top N functions each")  # fmt: skip
    ap.add_argument("--work-dir", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args(argv)
    paths = sorted({Path(p) for pattern in args.warc for p in (glob.glob(pattern) or [pattern])})
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="curation-bench-"))
    try:
        warcs, n = repack(paths, work / "warc", args.workers, args.limit)
        ours = None if args.skip_ours else run_ours(warcs, 0 if args.profile else args.workers, args.profile)
        theirs = (
            None if args.skip_datatrove else run_datatrove(work / "warc", work / "datatrove", args.workers)
        )
        text = report(n, warcs, ours, theirs, 0 if args.profile else args.workers)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(text)
    return text


if __name__ == "__main__":
    main()
