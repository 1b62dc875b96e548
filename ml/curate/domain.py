"""Domain classifier: ``general`` / ``code`` / ``math_reasoning`` / ``multilingual`` (the mix classes of
Llama 3 paper §3.1.2).

Teacher (stated rules, offline). A document is

* ``multilingual`` when its ``lang`` is not English (``english_langs``) and, where a ``lang_score`` column
  exists (py3langid's probability in [0, 1]), that score reaches ``min_lang_score`` (default 0.5); language takes precedence because
  the mix budgets non-English text as one class whatever its topic;
* otherwise each of its first ``max_lines`` non-empty lines is sorted into code / math / prose:
  a line is **math** first when it carries notation a computer-algebra or LaTeX text uses (inline
  ``$…$`` or ``\(``, a LaTeX command, a Greek letter or math symbol, a power ``x^2``/``x**2``, or a call of a
  mathematical function such as ``integrate(``, ``diff(``, ``solve(``, ``sqrt(``, ``sin(``: the REPL lines of
  Maxima and SymPy manuals are mathematics written as code); else
  a line is **code** on a strong signal (shell or REPL prompt ``$ ``/``>>> ``/``% ``, an option-table entry
  ``-x``/``--flag``, a code-keyword form such as ``def f(``, ``#include <``, ``int x =``, ``import m``, a line
  ending in ``;``, ``{`` or ``}``), else **math** on an equation ``a = b + c`` with spaced relation and an
  arithmetic operator, or one of the words theorem/lemma/proof/equation/…, else **code** when at least
  15% of its characters (and at least 3) are brackets, operators or other code punctuation, else prose;
* ``code_score`` and ``math_score`` are the fractions of code and math lines, ``math_vocab`` the share of
  the words of the first 20,000 characters that are mathematical terms (integral, matrix, polynomial,
  eigenvalue, theorem, coefficient, probability, …; not words programming shares such as function,
  variable, limit or series); the math ratio is the larger of ``math_score / math_threshold`` and
  ``math_vocab / math_vocab_threshold``: prose *about* mathematics counts, not only formulas. Among the
  classes whose ratio reaches 1 the one with the larger ratio wins, and a document reaching neither is
  ``general``.

On this corpus man pages of programming tools (SYNOPSIS lines, option tables) and package READMEs with
install/usage snippets are often ``code`` (on a 640-document sample of this machine's docs: 11% of English
man pages, 49% of READMEs, 28% of HTML pages). Mathematics comes from the Maxima, SymPy, Octave, R and
PARI/GP documentation the local web serves. Measured on the 1,286 English documents that pass the filters
of a ``make run``: the math rules label 56 of the 120 documents of those packages (1.76 of their 2.2M
characters; the rest are navigation pages, installation notes and indexes) and 16 of the 1,166 others,
most of them libm man pages (``ceill``, ``ldexp``, ``fmal``, ``cprojf``) and ``neqn``, which are about
mathematics. The earlier line rules alone (code before math, no vocabulary) labelled 4 documents of the
whole corpus math. When no document reaches the math bar the student has no math class (the training
report lists such classes under ``classes_untrainable``). The student (:mod:`ml.curate.classify`, multinomial logistic regression on hashed n-grams) is
trained on the teacher labels of a document-level split and then labels every document cheaply; the
``lang`` column is left untouched so per-language mixing stays possible.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ml.config import ConfigError, StageConfig
from ml.curate.classify import (
    LinearStudentFields,
    LinearTextClassifier,
    ModelFileError,
    fit_linear,
    lang_mask,
    multiclass_metrics,
    require_documents,
    split_by_document,
)
from ml.curate.steps import StepResult, empty_dropped

DOMAINS: tuple[str, ...] = ("general", "code", "math_reasoning", "multilingual")
TEACHER_DESCRIPTION = (
    "Rules: multilingual = lang not English (lang_score >= threshold); else the share of code-like lines "
    "(prompts, option flags, code keywords, ; { } endings, symbol density) and of math lines (LaTeX, Greek/"
    "math symbols, equations, theorem/proof vocabulary) against thresholds; else general."
)


@dataclass(frozen=True)
class DomainConfig(LinearStudentFields, StageConfig):
    """Teacher thresholds and student settings for the domain classifier."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"log2_buckets": 18, "max_chars": 4000, "max_train_docs": 5000},
        "small": {"log2_buckets": 19, "max_chars": 16000, "max_train_docs": 50000},
    }

    # teacher (chosen by reading rendered man pages, READMEs and HTML docs; see module docstring)
    english_langs: tuple[str, ...] = ("en",)
    # multilingual needs lang_score (py3langid probability) >= this when the column exists; chosen: on a
    # sample, real translations scored > 0.5 while a symbol list taken for Latin scored 0.12
    min_lang_score: float = 0.5
    code_threshold: float = 0.3  # share of code lines; prose docs sit below 0.1, man pages of tools above
    # chosen on this corpus (module docstring): 10% of lines with math notation, or 1.5% of words math terms;
    # English prose outside mathematics sits at 0.5% (man pages, mean) and below 1.7% (90th percentile)
    math_threshold: float = 0.1  # share of math lines
    math_vocab_threshold: float = 0.015  # share of words that are mathematical terms
    symbol_density: float = 0.15  # a line with >= this share of code punctuation is code
    max_lines: int = 400  # the teacher reads the first N non-empty lines
    # student
    max_train_docs: int = 20000  # seeded sample of documents labelled by the teacher for training
    # other student settings (log2_buckets, n-grams, c, max_iter, split, seed, batch): LinearStudentFields

    def __post_init__(self) -> None:
        for name in ("code_threshold", "math_threshold", "math_vocab_threshold", "symbol_density"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"DomainConfig.{name} must be in (0, 1], got {getattr(self, name)}")


# ---------------------------------------------------------------------------------------- teacher rules

_PROMPT = re.compile(r"^(\$|>>>|%|PS>|In \[\d+\]:)\s")
_OPTION = re.compile(r"^--?[A-Za-z0-9][\w-]*([=\[,\s]|$)")
_CODE_FORM = re.compile(
    r"^(async\s+def|def|fn|func|function)\s+\w+\s*\("
    r"|^class\s+\w+\s*[(:{]"
    r"|^(import\s+[\w.]+(\s+as\s+\w+)?\s*$|from\s+[\w.]+\s+import\s)"
    r"|^#\s*(include|define|ifn?def|endif|pragma)\b"
    r"|^(int|void|char|long|short|unsigned|float|double|bool|size_t|static|const|struct|enum|typedef|extern)"
    r"(\s+\w+)?\s+\**\w+(\(|\s*=[^=]|;|\[)"
    r"|^(let|var|const)\s+\w+\s*[=:]"
    r"|^(public|private|protected)\s+(static\s+)?\w+"
    r"|^(if|for|while|switch)\s*\(.*\)"
    r"|^(SELECT|INSERT|UPDATE|CREATE|DELETE)\s+\S"
    r"|^(sudo|pip3?|apt(-get)?|npm|yarn|conda|docker|curl|wget|brew)\s+\S",
)
_CODE_END = re.compile(r"[;{}]$|\)\s*:$|\*/$")
_CODE_CHARS = frozenset("{}[]()<>=;:+-*/\\|&!~^%$@`_")  # not "#": Markdown headings
_LATEX = re.compile(
    r"\\(frac|sum|int|prod|sqrt|lim|infty|partial|alpha|beta|gamma|delta|theta|lambda|mu|sigma"
    r"|pi|omega|epsilon|cdot|times|leq|geq|neq|approx|mathbb|mathrm|begin\{equation)\b"
    r"|\$[^$\s][^$\n]*[\\^][^$\n]*\$"
)
_MATH_SYMBOL = re.compile(r"[\u0391-\u03a9\u03b1-\u03c9∑∏∫√∞∂∇≤≥≠≈≡±×÷∈∉⊂⊆∪∩∀∃⇒⇔]")
_EQUATION = re.compile(r"[\w)]\s+(=|<|>|<=|>=)\s+[-(]?\s*[\w(]")
_ARITH = re.compile(r"[\w)]\s+[-+*/·×]\s+[\w(]|\d\s*[-+*/^]\s*\d|\w\^\w|\w\*\*\d")
# not "derivative"/"integral": licences ("derivative works") and C docs ("integral type") use them
_MATH_WORDS = re.compile(
    r"\b(theorems?|lemmas?|proofs?|corollary|axioms?|conjectures?|q\.e\.d|"
    r"equations?|polynomials?|eigenvalues?|eigenvectors?|isomorphi\w*)\b",
    re.IGNORECASE,
)
# notation that makes a line mathematics even when it is also code (REPL lines of CAS manuals)
_INLINE_MATH = re.compile(r"\$[^$\n]{1,80}\$|\\\(|\\\[")
_POWER = re.compile(r"[A-Za-z)]\s*(\^|\*\*)\s*[\w(]")
_MATH_CALL = re.compile(
    r"\b(integrate|diff|solve|dsolve|nsolve|linsolve|limit|taylor|simplify|ratsimp|trigsimp|expand|factor"
    r"|sqrt|sin|cos|tan|asin|acos|atan|sinh|cosh|exp|log|det|eigenvals?|eigenvectors|Integral|Derivative"
    r"|Matrix|Rational|gcd|lcm|binomial|factorial)\s*\("
)
_MATH_TERMS = re.compile(
    r"\b(integrals?|integrat(?:e|es|ed|ing|ion)|derivatives?|differentia(?:l|ls|te|tion)|matri(?:x|ces)"
    r"|polynomials?|equations?|theorems?|lemmas?|proofs?|corollar(?:y|ies)|eigen\w+|determinants?"
    r"|logarithms?|logarithmic|exponentials?|trigonometr\w+|sines?|cosines?|algebra(?:ic)?|arithmetic"
    r"|numerators?|denominators?|coefficients?|quotients?|primes?|factori[sz](?:e|ed|ation)|fractions?"
    r"|irrational|infinity|infinite|summation|convergen(?:ce|t)|divergen(?:ce|t)|symbolic"
    r"|simplif(?:y|ies|ied|ication)|quadratic|cubic|geometr(?:y|ic)|orthogonal|probabilit(?:y|ies)"
    r"|variance|regression|polar|asymptotic|tensors?|manifolds?|topolog\w+|modular|congruen\w+|gcd|lcm"
    r"|numerical(?:ly)?|interpolation|approximation)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[A-Za-z]+")
VOCAB_CHARS = 20_000
_RULER = re.compile(r"^\s*([^\w\s])\1+\s*$")  # ===== / ----- underlines are layout, not content


def line_kind(line: str, symbol_density: float = 0.15) -> str:
    """``"code"``, ``"math"`` or ``"prose"`` for one non-empty line (rules in the module docstring)."""
    s = line.strip()
    if _LATEX.search(s) or _INLINE_MATH.search(s) or _MATH_SYMBOL.search(s):
        return "math"
    if _POWER.search(s) or _MATH_CALL.search(s):
        return "math"
    if _PROMPT.match(s) or _OPTION.match(s) or _CODE_FORM.match(s) or _CODE_END.search(s):
        return "code"
    if _MATH_WORDS.search(s) or (_EQUATION.search(s) and _ARITH.search(s)):
        return "math"
    n_sym = sum(ch in _CODE_CHARS for ch in s)
    if n_sym >= 3 and n_sym >= symbol_density * len(s):
        return "code"
    return "prose"


def math_vocab(text: str) -> float:
    """Share of the words of the first ``VOCAB_CHARS`` characters that are mathematical terms."""
    head = text[:VOCAB_CHARS]
    words = len(_WORD.findall(head))
    return len(_MATH_TERMS.findall(head)) / words if words else 0.0


def domain_scores(text: str, cfg: DomainConfig) -> tuple[float, float, float]:
    """``(code_score, math_score, math_vocab)``: shares of code and math lines among the first ``max_lines``
    lines, and the math-term share of the words."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not _RULER.match(ln)][: cfg.max_lines]
    if not lines:
        return 0.0, 0.0, 0.0
    kinds = [line_kind(ln, cfg.symbol_density) for ln in lines]
    return kinds.count("code") / len(lines), kinds.count("math") / len(lines), math_vocab(text)


def teacher_domains(df: pd.DataFrame, cfg: DomainConfig) -> pd.DataFrame:
    """Teacher label per row: columns ``domain``, ``code_score``, ``math_score`` (index aligned with ``df``)."""
    require_documents(df, "teacher_domains")
    foreign = ~lang_mask(df, cfg.english_langs, 0.0, "teacher_domains")
    if cfg.min_lang_score > 0 and "lang_score" in df.columns:  # lang_score is optional in the contract
        foreign &= lang_mask(df, (), cfg.min_lang_score, "teacher_domains")
    scores = np.array([domain_scores(t, cfg) for t in df["text"]], dtype=np.float64).reshape(-1, 3)
    code_r = scores[:, 0] / cfg.code_threshold
    math_r = np.maximum(scores[:, 1] / cfg.math_threshold, scores[:, 2] / cfg.math_vocab_threshold)
    label = np.where(
        foreign,
        "multilingual",
        np.where(
            (code_r >= 1) & (code_r > math_r), "code", np.where(math_r >= 1, "math_reasoning", "general")
        ),
    )
    return pd.DataFrame(
        {"domain": label, "code_score": scores[:, 0], "math_score": scores[:, 1], "math_vocab": scores[:, 2]},
        index=df.index,
    )


# ------------------------------------------------------------------------------------------- student


@dataclass
class DomainModel:
    """The student: a multinomial classifier over the domains the teacher found in the training data."""

    classifier: LinearTextClassifier

    def predict(self, texts: Sequence[str], batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """``(domain (N,) str, confidence (N,) float)`` — the argmax class and its probability."""
        proba = self.classifier.predict_proba(list(texts), batch_size)  # (N, K)
        return np.asarray(self.classifier.classes, dtype=object)[proba.argmax(axis=1)], proba.max(axis=1)

    def save(self, directory: Path | str) -> Path:
        return self.classifier.save(directory)

    @classmethod
    def load(cls, directory: Path | str) -> DomainModel:
        clf = LinearTextClassifier.load(directory)
        if clf.meta.get("task") != "domain" or not set(clf.classes) <= set(DOMAINS):
            raise ModelFileError(Path(directory) / "model.json", "not a domain model (task/classes differ)")
        return cls(clf)


def train_domain_classifier(df: pd.DataFrame, cfg: DomainConfig) -> tuple[DomainModel, dict[str, Any]]:
    """Label documents with the teacher rules, fit the student on a document-level split, and report
    held-out accuracy, per-class precision/recall and the confusion matrix against the teacher."""
    require_documents(df, "train_domain_classifier")
    rows = np.arange(len(df))
    if len(rows) > cfg.max_train_docs:
        rows = np.sort(np.random.default_rng(cfg.seed).choice(rows, cfg.max_train_docs, replace=False))
    sample = df.iloc[rows]
    teacher = teacher_domains(sample, cfg)
    y = teacher["domain"].to_numpy(dtype=object)
    texts = sample["text"].tolist()
    counts = {d: int((y == d).sum()) for d in DOMAINS}
    trainable = [d for d in DOMAINS if counts[d] >= 2]  # a class needs a train and a held-out document
    if len(trainable) < 2:
        raise ValueError(
            f"train_domain_classifier: teacher class counts {counts}; need >= 2 classes with >= 2 docs"
        )
    keep = np.isin(y, trainable)
    texts, y = [t for t, k in zip(texts, keep, strict=True) if k], y[keep]
    train_idx, held_idx = split_by_document(y, texts, cfg.held_out_fraction, cfg.seed)
    meta = {"task": "domain", "teacher": TEACHER_DESCRIPTION}
    clf = fit_linear([texts[i] for i in train_idx], y[train_idx], cfg.featurizer, cfg.train, cfg.seed, meta)
    model = DomainModel(clf)
    pred_held, _ = model.predict([texts[i] for i in held_idx], cfg.batch_size)
    pred_train, _ = model.predict([texts[i] for i in train_idx], cfg.batch_size)
    held = multiclass_metrics(y[held_idx], pred_held, clf.classes)
    report = {
        "teacher": {
            "description": TEACHER_DESCRIPTION,
            "code_threshold": cfg.code_threshold,
            "math_threshold": cfg.math_threshold,
            "symbol_density": cfg.symbol_density,
            "english_langs": list(cfg.english_langs),
            "min_lang_score": cfg.min_lang_score,
            "docs_labelled": len(sample),
            "class_counts": counts,
            "classes_untrainable": [d for d in DOMAINS if d not in trainable],
            "code_score_mean": float(teacher["code_score"].mean()),
            "math_score_mean": float(teacher["math_score"].mean()),
        },
        "student": {
            "model": "multinomial logistic regression (L-BFGS) on hashed word 1-2-grams + char n-grams",
            "featurizer": cfg.featurizer.to_dict(),
            "classes": list(clf.classes),
            "n_iter": clf.meta["n_iter"],
            "train_docs": len(train_idx),
            "held_out_docs": len(held_idx),
            "held_out": held,
            "train_accuracy": multiclass_metrics(y[train_idx], pred_train, clf.classes)["accuracy"],
        },
        "agreement": {"held_out_accuracy": held["accuracy"]},
    }
    return model, report


def classify_domain(df: pd.DataFrame, model: DomainModel, cfg: DomainConfig) -> StepResult:
    """Add ``domain`` and ``domain_confidence`` to every document (nothing is dropped; ``lang`` kept)."""
    require_documents(df, "classify_domain")
    out = df.copy().reset_index(drop=True)
    domain, confidence = model.predict(out["text"].tolist(), cfg.batch_size)
    out["domain"] = pd.Series(domain, dtype=str)
    out["domain_confidence"] = confidence
    stats: dict[str, float | int] = {f"domain_docs/{d}": int((domain == d).sum()) for d in DOMAINS}
    stats["domain_confidence_mean"] = float(confidence.mean()) if len(out) else math.nan
    return StepResult(out, empty_dropped(), stats)
