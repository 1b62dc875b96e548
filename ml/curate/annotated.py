"""Documents labelled good/bad by people, and how a quality scorer agrees with them.

The file ``ml/resources/quality_annotations/v<N>.jsonl`` holds one JSON object per line::

    {"id": sha1 of text, "url": ..., "lang": ..., "source_type": ..., "n_chars": length of the whole
     document, "split": "dev" | "test", "label": 1 (good) | 0 (bad), "reason": one line, "text": ...}

``text`` is the document's first ``MAX_TEXT_CHARS`` characters; ``id`` is the SHA-1 of that text (UTF-8),
so an edited text no longer matches its id. The labels follow ``RUBRIC.md`` next to the file (what an
LLM-pretraining curator wants), the data card there says how the sample was drawn and labelled. The
``dev`` split may be used to choose a scorer (the teacher is fitted on it), ``test`` only to report.

:func:`load_annotations` raises :class:`AnnotationError` naming the file and line of the first bad row.
:func:`agreement` scores a scorer against the labels: ROC AUC, and precision/recall/F1 of the "good"
class at a threshold (a document is kept when its score is at least the threshold).
:func:`sample_for_annotation` is the seeded, stratified draw that produced the file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.curate.classify import binary_metrics

ANNOTATIONS_DIR = Path(__file__).resolve().parent.parent / "resources" / "quality_annotations"
MAX_TEXT_CHARS = 6000
SPLITS = ("dev", "test")
FIELDS = ("id", "url", "lang", "source_type", "n_chars", "split", "label", "reason", "text")
SOURCE_TYPES = (
    "copyright",
    "readme",
    "man",
    "man_gcloud",
    "html_docs",
    "math_docs",
    "texinfo",
    "tex_source",
    "other",
)


# the draw behind v1 (see RUBRIC.md): documents per English source type, other-language documents, seed
V1_QUOTAS = {
    "copyright": 56,
    "readme": 42,
    "man": 80,
    "man_gcloud": 70,
    "html_docs": 20,
    "math_docs": 20,
    "texinfo": 24,
    "tex_source": 10,
}
V1_OTHER_LANG = 16
V1_SEED = 19


class AnnotationError(ValueError):
    """A row of an annotation file is malformed; the message names the file and the line."""

    def __init__(self, path: Path | str, line: int, problem: str):
        self.path, self.line = Path(path), line
        super().__init__(f"{path}:{line}: {problem}")


def annotations_path(version: int = 1, root: Path = ANNOTATIONS_DIR) -> Path:
    return Path(root) / f"v{version}.jsonl"


def text_id(text: str) -> str:
    """The stable id of an annotated text: SHA-1 of its UTF-8 bytes."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def source_type(url: str) -> str:
    """Kind of local-web page, from its path: licence files, READMEs, man pages (generated gcloud ones
    apart), package HTML docs, the SymPy math docs, texinfo manuals, TeX sources."""
    path = re.sub(r"^[a-z]+://[^/]+/", "", url)
    if path.startswith("copyright/"):
        return "copyright"
    if path.startswith("pypi/"):
        return "readme"
    if path.startswith("man/"):
        return "man_gcloud" if re.search(r"/gcloud[_.]", path) else "man"
    if path.startswith("docs/tex/"):
        return "tex_source"
    if "python-sympy-doc" in path:
        return "math_docs"
    if re.search(r"maxima-doc|octave|r-doc-html|/info/|libffi", path):
        return "texinfo"
    return "html_docs" if path.startswith("docs/") else "other"


def _check_row(row: Any, seen: set[str]) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    missing, unknown = sorted(set(FIELDS) - set(row)), sorted(set(row) - set(FIELDS))
    if missing or unknown:
        raise ValueError(f"missing field(s) {missing}, unknown field(s) {unknown}")
    for name in ("id", "url", "lang", "reason", "text"):
        if not isinstance(row[name], str) or not row[name].strip():
            raise ValueError(f"{name} must be a non-empty string")
    if row["label"] not in (0, 1) or isinstance(row["label"], bool):
        raise ValueError(f"label must be 0 (bad) or 1 (good), got {row['label']!r}")
    if row["split"] not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {row['split']!r}")
    if row["source_type"] not in SOURCE_TYPES:
        raise ValueError(f"source_type must be one of {SOURCE_TYPES}, got {row['source_type']!r}")
    if not isinstance(row["n_chars"], int) or row["n_chars"] < len(row["text"]):
        raise ValueError(f"n_chars must be an integer >= len(text) = {len(row['text'])}")
    if len(row["text"]) > MAX_TEXT_CHARS:
        raise ValueError(f"text has {len(row['text'])} characters, more than {MAX_TEXT_CHARS}")
    if row["id"] != text_id(row["text"]):
        raise ValueError(f"id {row['id']} is not the SHA-1 of the text ({text_id(row['text'])})")
    if row["id"] in seen:
        raise ValueError(f"duplicate id {row['id']}")
    seen.add(row["id"])
    return row


def load_annotations(path: Path | str | None = None) -> pd.DataFrame:
    """Read and validate an annotation file (default: the newest shipped version, ``v1``)."""
    path = Path(path) if path is not None else annotations_path()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise AnnotationError(path, 0, f"cannot read: {exc}") from exc
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(_check_row(json.loads(line), seen))
        except (json.JSONDecodeError, ValueError) as exc:
            raise AnnotationError(path, i, str(exc)) from None
    if not rows:
        raise AnnotationError(path, 0, "no annotated documents")
    return pd.DataFrame(rows, columns=list(FIELDS))


def agreement(
    labels: Sequence[int],
    scores: Sequence[float],
    threshold: float | None = None,
    higher_is_better: bool = True,
) -> dict[str, Any]:
    """How a scorer agrees with people: ``n``, ``n_good``, ``n_bad``, ``roc_auc`` (ties count one half),
    and, when ``threshold`` is given, precision/recall/F1/accuracy of the "good" class for documents with
    ``score >= threshold`` plus the confusion counts. ``higher_is_better=False`` is for scores such as
    perplexity where lower means better (the AUC is computed on the negated score; no threshold then)."""
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=np.float64)
    if len(y) != len(s):
        raise ValueError(f"agreement: {len(y)} labels but {len(s)} scores")
    if np.isnan(s).any():
        raise ValueError(f"agreement: {int(np.isnan(s).sum())} score(s) are NaN")
    if not higher_is_better and threshold is not None:
        raise ValueError("agreement: a threshold applies to higher-is-better scores only")
    oriented = s if higher_is_better else -s
    out: dict[str, Any] = {"n": len(y), "n_good": int((y == 1).sum()), "n_bad": int((y == 0).sum())}
    m = binary_metrics(y, oriented, threshold if threshold is not None else 0.5)
    out["roc_auc"] = m["roc_auc"]
    if threshold is not None:
        out |= {k: m[k] for k in ("precision", "recall", "f1", "accuracy", "confusion")}
        out["threshold"] = threshold
    return out


def sample_for_annotation(
    df: pd.DataFrame, perplexity: np.ndarray, quotas: dict[str, int], n_other_lang: int, seed: int
) -> pd.DataFrame:
    """The seeded, stratified draw behind the annotation file. English documents are grouped by
    :func:`source_type`; within a group (sorted by teacher perplexity, then id) ``quotas[type]``
    equal-count perplexity bins each give one random document, so every group's perplexity range is
    covered. ``n_other_lang`` documents in other languages are drawn the same way. Consecutive picks of
    a group are paired and a coin decides which of the pair goes to ``dev`` and which to ``test``."""
    rng = np.random.default_rng(seed)
    df = df.assign(source_type=df["url"].map(source_type), perplexity=np.asarray(perplexity, np.float64))
    en = (df["lang"] == "en").to_numpy()
    groups = [(df[en & (df["source_type"] == t).to_numpy()], n) for t, n in quotas.items()]
    groups.append((df[~en], n_other_lang))
    picked = []
    for group, n in groups:
        if n <= 0 or group.empty:
            continue
        group = group.sort_values(["perplexity", "id"], kind="stable")
        bins = np.array_split(np.arange(len(group)), min(n, len(group)))
        chosen = group.iloc[[int(rng.choice(b)) for b in bins]].copy()
        split: list[str] = []
        for i in range(0, len(chosen), 2):
            pair = ["dev", "test"] if rng.random() < 0.5 else ["test", "dev"]
            split.extend(pair[: len(chosen) - i])
        chosen["split"] = split
        picked.append(chosen)
    return pd.concat(picked, ignore_index=True) if picked else df.iloc[:0].assign(split=[])


def annotation_record(doc: pd.Series, label: int, reason: str) -> dict[str, Any]:
    """One line of the annotation file for a sampled document and its label."""
    text = doc["text"][:MAX_TEXT_CHARS]
    return {
        "id": text_id(text),
        "url": doc["url"],
        "lang": doc["lang"],
        "source_type": doc["source_type"],
        "n_chars": len(doc["text"]),
        "split": doc["split"],
        "label": int(label),
        "reason": reason,
        "text": text,
    }


def split_rows(annotations: pd.DataFrame, split: str, langs: Sequence[str] = ()) -> pd.DataFrame:
    """The rows of one split, restricted to ``langs`` (all languages when empty)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rows = annotations[annotations["split"] == split]
    if langs:
        rows = rows[rows["lang"].isin(list(langs))]
    return rows.reset_index(drop=True)
