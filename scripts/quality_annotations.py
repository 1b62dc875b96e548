"""Draw documents for quality annotation, and measure teachers and students against the labels.

    python scripts/quality_annotations.py sample DOCS_DIR OUT.jsonl   # unlabelled candidates (v1's draw)
    python scripts/quality_annotations.py evaluate [DOCS_DIR]         # before/after on the test split

``DOCS_DIR`` holds the Parquet shards of ``filtered_docs`` (the quality step's input), e.g.
``data/filtered_docs/<partition>/docs``. ``sample`` ranks documents by the perplexity teacher (preset
``tiny``) and writes one JSON line per drawn document with every field of the annotation file except
``label`` and ``reason``, which a person adds after reading it against ``RUBRIC.md``. ``evaluate`` prints
both teachers' ROC AUC on the test split and, given ``DOCS_DIR``, trains a student from each teacher on
those documents and prints its agreement with people at the filter threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ml.curate.annotated import (
    V1_OTHER_LANG,
    V1_QUOTAS,
    V1_SEED,
    agreement,
    annotation_record,
    load_annotations,
    sample_for_annotation,
    split_rows,
)
from ml.curate.quality import QualityConfig, teacher_scores, train_quality_classifier
from ml.io import read_shards


def sample(docs_dir: Path, out: Path) -> None:
    df = read_shards(docs_dir)
    cfg = QualityConfig.from_preset("tiny", teacher="perplexity")
    _, ppl, _ = teacher_scores(df["text"].tolist(), cfg)
    drawn = sample_for_annotation(df, ppl, V1_QUOTAS, V1_OTHER_LANG, V1_SEED)
    with out.open("w", encoding="utf-8") as f:
        for _, doc in drawn.iterrows():
            row = annotation_record(doc, 0, "-")
            del row["label"], row["reason"]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(drawn)} documents -> {out}")


def evaluate(docs_dir: Path | None) -> None:
    test = split_rows(load_annotations(), "test", ("en",))
    texts, y = test["text"].tolist(), test["label"].to_numpy()
    for teacher in ("perplexity", "signals"):
        cfg = QualityConfig.from_preset("tiny", teacher=teacher)
        score, _, _ = teacher_scores(texts, cfg)
        print(f"teacher {teacher:10s} test AUC {agreement(y, np.asarray(score))['roc_auc']:.4f} (n={len(y)})")
        if docs_dir is not None:
            _, report = train_quality_classifier(read_shards(docs_dir), cfg)
            s = report["annotated"]["student"]
            print(
                f"student of {teacher:10s} test AUC {s['roc_auc']:.4f} precision {s['precision']:.4f} "
                f"recall {s['recall']:.4f} F1 {s['f1']:.4f} at threshold {s['threshold']}"
            )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample")
    s.add_argument("docs_dir", type=Path)
    s.add_argument("out", type=Path)
    e = sub.add_parser("evaluate")
    e.add_argument("docs_dir", type=Path, nargs="?")
    args = parser.parse_args(argv)
    if args.command == "sample":
        sample(args.docs_dir, args.out)
    else:
        evaluate(args.docs_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
