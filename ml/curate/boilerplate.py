"""C4/FineWeb-style boilerplate lines: removed line by line, each removal counted by reason.

Llama 3 paper §3.1.1 cleans extracted pages of boilerplate before dedup and the heuristic filters. The line
rules follow C4 (Raffel et al. 2020, §2.2) and FineWeb (Penedo et al. 2024), narrowed where the published
rule would delete documentation prose:

- ``javascript``: C4 removes every line naming JavaScript; here only lines asking a browser to enable it
  (on documentation the blunt rule deletes sentences about JavaScript itself).
- ``policy``: C4's cookie / privacy-policy / terms-of-use phrases, as published.
- ``navigation``: texinfo's ``Next: … Previous: … Up: …`` lines and their fragments, Sphinx's
  ``index | modules | next | previous`` bars and lone navigation links (``Skip to content``, ``Back to top``).
- ``lorem_ipsum``: C4 drops the whole page.
- ``line_punct``: FineWeb drops a document when under 12% of its lines end in terminal punctuation. The
  rule is about prose: documents whose lines are code or option lists (>= ``code_line_exempt_frac`` of
  lines indented, ending in ``{ } ;``, starting with ``-opt``, ``#include``, ``import``, ``$ ``, ``>>>``)
  and documents under ``line_punct_min_lines`` lines are not judged by it (counted).
C4's curly-bracket rule (drop any page with ``{``) is not applied: the corpus keeps code, §3.1.1.

Hard-wrapped prose (licences, plain-text READMEs: a paragraph cut into lines of ~72 characters) is
unwrapped first, one line per paragraph, so that line dedup later compares sentences and not the
fragments a line width happened to cut (ccNet's rule counts lines).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from ml.config import ConfigError, StageConfig
from ml.curate.steps import StepResult, empty_dropped, make_dropped

LINE_RULES: tuple[str, ...] = ("javascript", "policy", "navigation")
POLICY_PHRASES: tuple[str, ...] = (
    "terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies",
)  # fmt: skip  # C4's list (as datatrove ships it)
TERMINAL_PUNCTUATION = ".!?。！？｡؟।॥"  # sentence ends in Latin, CJK, Arabic and Devanagari scripts
_CLOSERS = "\"'”’»)]」』"  # a quote or bracket after the sentence end still ends the sentence
_CODE_LINE = re.compile(
    r"^(?: {4,}|\t)|[{};]\s*$|^\s*(?:#include|import |from \S+ import |def |class |\$ |>>> |\.\. |-{1,2}\w)"
)

_BLOCK_BREAK = re.compile(r"\n[ \t]*\n")
_DEP5_BREAK = re.compile(r"(?m)^ \.$")  # Debian control files (copyright): " ." is a blank line
_LIST_ITEM = re.compile(r"^\s*(?:[-*•·–]\s|\d+[.)]\s|\(?[a-z]\)\s)")
_JS_NOTICE = re.compile(
    r"\bjavascript\b.{0,60}\b(enabl|disabl|requir|turn(ed)? (it )?on|browser|support)"
    r"|\b(enabl|disabl|requir|turn on)\w*\b.{0,60}\bjavascript\b",
    re.IGNORECASE,
)
_TEXINFO_LABEL = re.compile(r"\b(?:Next|Previous|Prev|Up)\s*:")
_TEXINFO_LONE = re.compile(r",?\s*(?:Next|Previous|Prev|Up)\s*:\s*")
_TEXINFO_TAIL = re.compile(r"\[(?:Contents|Index)\]\s*$")
_NAV_LINKS = frozenset({
    "skip to content", "skip to main content", "jump to navigation", "jump to search", "back to top",
    "previous topic", "next topic", "this page", "show source", "quick search", "navigation", "index",
    "modules", "next", "previous", "contents", "table of contents", "home", "top", "up",
})  # fmt: skip


@dataclass(frozen=True)
class BoilerplateConfig(StageConfig):
    """Which boilerplate line rules run; the document rules' thresholds."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"tiny": {}, "small": {}, "8b": {}, "70b": {}, "405b": {}}

    line_rules: tuple[str, ...] = LINE_RULES
    policy_phrases: tuple[str, ...] = POLICY_PHRASES
    drop_lorem_ipsum: bool = True  # C4: a page containing "lorem ipsum" is a template, dropped whole
    min_line_punct_frac: float = 0.12  # FineWeb: >= 12% of non-empty lines end in terminal punctuation
    line_punct_min_lines: int = 5  # chosen: a 2-line page is not a paragraph structure to judge
    code_line_exempt_frac: float = 0.1  # chosen: from 10% code/option lines on, lines need not end sentences
    unwrap: bool = True  # join the lines of hard-wrapped paragraphs
    wrap_min_lines: int = 3  # chosen: a paragraph of fewer lines is not evidence of a fixed line width
    wrap_max_width: int = 100  # chosen: text wrapped for a terminal or an e-mail stays under ~80 columns
    wrap_fill: float = 0.6  # chosen: each line but the last fills >= 60% of the widest (a ragged right edge)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.line_rules) - set(LINE_RULES))
        if unknown:
            raise ConfigError(
                f"BoilerplateConfig.line_rules: unknown {unknown}; valid: {', '.join(LINE_RULES)}"
            )
        if not 0.0 <= self.min_line_punct_frac <= 1.0:
            raise ConfigError(
                f"BoilerplateConfig.min_line_punct_frac: {self.min_line_punct_frac} not in [0, 1]"
            )


def is_navigation(line: str) -> bool:
    """Texinfo node navigation, a Sphinx relation bar, or a lone navigation link."""
    s = line.strip()
    if _TEXINFO_LONE.fullmatch(s):
        return True
    if re.match(r",?\s*(?:Next|Previous|Prev|Up)\s*:", s) and (
        len(_TEXINFO_LABEL.findall(s)) >= 2 or _TEXINFO_TAIL.search(s)
    ):
        return True
    parts = [p.strip(" »›<>").casefold() for p in s.split("|")]
    if len(parts) >= 3 and sum(p in _NAV_LINKS for p in parts) >= 2:
        return True
    return s.strip(" »›<>").casefold() in _NAV_LINKS


def is_hard_wrapped(lines: list[str], cfg: BoilerplateConfig) -> bool:
    """A block of prose lines cut at a fixed width: no code, list items or sentence-ending lines inside."""
    if len(lines) < cfg.wrap_min_lines:
        return False
    widths = [len(line.rstrip()) for line in lines]
    widest = max(widths)
    if widest > cfg.wrap_max_width or any(w < cfg.wrap_fill * widest for w in widths[:-1]):
        return False
    if any(_CODE_LINE.search(line.strip() + " ") or _LIST_ITEM.match(line) for line in lines[1:]):
        return False
    # a wrapped paragraph's lines run on: most do not end a sentence
    return sum(ends_sentence(line) for line in lines[:-1]) <= (len(lines) - 1) // 2


def unwrap_paragraphs(text: str, cfg: BoilerplateConfig) -> tuple[str, int]:
    """Hard-wrapped paragraphs joined into one line each; returns the text and the paragraphs joined."""
    blocks = _BLOCK_BREAK.split(_DEP5_BREAK.sub("", text))
    joined = 0
    for i, block in enumerate(blocks):
        lines = block.split("\n")
        if is_hard_wrapped(lines, cfg):
            blocks[i] = " ".join(line.strip() for line in lines)
            joined += 1
    return ("\n\n".join(blocks) if joined else text), joined


def line_reason(line: str, cfg: BoilerplateConfig) -> str | None:
    """The first line rule a line matches (it is removed), or None (kept)."""
    if not line.strip():
        return None
    low = line.casefold()
    if "javascript" in cfg.line_rules and "javascript" in low and _JS_NOTICE.search(line):
        return "javascript"
    if "policy" in cfg.line_rules and any(p in low for p in cfg.policy_phrases):
        return "policy"
    if "navigation" in cfg.line_rules and is_navigation(line):
        return "navigation"
    return None


def ends_sentence(line: str) -> bool:
    return line.rstrip().rstrip(_CLOSERS).endswith(tuple(TERMINAL_PUNCTUATION))


def clean_text(text: str, cfg: BoilerplateConfig) -> tuple[str, Counter[str]]:
    """``text`` without its boilerplate lines (hard-wrapped paragraphs unwrapped when ``cfg.unwrap``), and
    how many lines each rule removed (``unwrapped``: paragraphs joined)."""
    removed: Counter[str] = Counter()
    if cfg.unwrap:
        text, joined = unwrap_paragraphs(text, cfg)
        if joined:
            removed["unwrapped"] = joined
    kept: list[str] = []
    for line in text.split("\n"):
        reason = line_reason(line, cfg)
        if reason is None:
            kept.append(line)
        else:
            removed[reason] += 1
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip(), removed


def line_punct_applies(lines: list[str], cfg: BoilerplateConfig) -> bool:
    """The terminal-punctuation rule judges prose: enough lines, few of them code or option lists."""
    if len(lines) < cfg.line_punct_min_lines:
        return False
    return sum(1 for line in lines if _CODE_LINE.search(line)) / len(lines) < cfg.code_line_exempt_frac


def document_reason(text: str, cfg: BoilerplateConfig) -> tuple[str, str] | None:
    """``(reason, detail)`` when the cleaned document is dropped whole, else None."""
    if not text:
        return "empty_after_lines", "every line was boilerplate"
    if cfg.drop_lorem_ipsum and "lorem ipsum" in text.casefold():
        return "lorem_ipsum", "contains 'lorem ipsum'"
    lines = [line for line in text.split("\n") if line.strip()]
    if line_punct_applies(lines, cfg):
        frac = sum(ends_sentence(line) for line in lines) / len(lines)
        if frac < cfg.min_line_punct_frac:
            return "line_punct", f"{frac:.3f} of lines end a sentence < {cfg.min_line_punct_frac}"
    return None


def remove_boilerplate(df: pd.DataFrame, cfg: BoilerplateConfig) -> StepResult:
    """Clean every document's lines, then drop the documents a document rule rejects.

    Kept rows get ``boilerplate_lines`` (lines removed); stats: ``lines_removed/<rule>``,
    ``docs_with_removed_lines``.
    """
    texts, n_removed, verdicts = [], [], []
    totals: Counter[str] = Counter()
    for text in df["text"].astype(str):
        cleaned, removed = clean_text(text, cfg)
        texts.append(cleaned)
        n_removed.append(sum(n for r, n in removed.items() if r != "unwrapped"))
        totals.update(removed)
        verdicts.append(document_reason(cleaned, cfg))
    out = df.assign(text=texts, boilerplate_lines=n_removed)
    drop = pd.Series([v is not None for v in verdicts], index=df.index)
    dropped = (
        make_dropped(
            df[drop],
            pd.Series([v[0] for v in verdicts if v]),
            pd.Series([v[1] for v in verdicts if v]),
        )
        if drop.any()
        else empty_dropped()
    )
    stats: dict[str, float | int] = {f"lines_removed/{r}": totals[r] for r in LINE_RULES}
    stats["docs_with_removed_lines"] = sum(1 for n in n_removed if n)
    stats["paragraphs_unwrapped"] = totals["unwrapped"]
    stats["line_punct_not_judged"] = sum(
        1 for t in texts if t and not line_punct_applies([ln for ln in t.split("\n") if ln.strip()], cfg)
    )
    return StepResult(kept=out[~drop].reset_index(drop=True), dropped=dropped, stats=stats)
