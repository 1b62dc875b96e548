"""Data cleaning (Llama 3 paper §4.2.3): drop responses in overused tones — excess emojis or exclamation
points, "I'm sorry" / "I apologize" — every drop with its reason and the measured value.

The paper publishes the tones, not thresholds; ours are stated in :class:`ToneConfig`. Only assistant text
is judged (an SFT record's assistant turns, a preference record's chosen and edited responses: a rejected
response is meant to be bad). Counts of kept and dropped records by reason come back with the records, as
the curation steps report theirs.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

# Emoji blocks of Unicode (pictographs, emoticons, transport, supplemental symbols, dingbats, flags).
_EMOJI = re.compile("[\U0001f300-\U0001faff\U00002600-\U000027bf\U0001f1e6-\U0001f1ff]")
_APOLOGY = re.compile(r"\bI(?:'|’)m (?:so |very |really )?sorry\b|\bI apologi[sz]e\b", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class ToneConfig:
    """max_emojis / max_exclamations: per response (chosen: 2 each, a response may greet once or twice);
    apologies: any "I'm sorry" / "I apologize" drops the response (the paper names them as overused)."""

    max_emojis: int = 2
    max_exclamations: int = 2
    drop_apologies: bool = True


def tone_issues(text: str, cfg: ToneConfig = ToneConfig()) -> list[tuple[str, str]]:
    """``(reason, detail)`` for each overused tone in ``text``, e.g. ``("emojis", "3 > 2")``."""
    issues = []
    emojis = len(_EMOJI.findall(text))
    if emojis > cfg.max_emojis:
        issues.append(("emojis", f"{emojis} > {cfg.max_emojis}"))
    bangs = text.count("!")
    if bangs > cfg.max_exclamations:
        issues.append(("exclamations", f"{bangs} > {cfg.max_exclamations}"))
    apologies = _APOLOGY.findall(text)
    if cfg.drop_apologies and apologies:
        issues.append(("apology", repr(apologies[0])))
    return issues


def _judged_texts(record: Mapping[str, Any]) -> list[str]:
    if "messages" in record:
        return [m["content"] for m in record["messages"] if m["role"] == "assistant"]
    return [record[f] for f in ("chosen", "edited") if record.get(f) is not None]


def clean_records(
    records: Iterable[Mapping[str, Any]], cfg: ToneConfig = ToneConfig()
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Counter]:
    """(kept, dropped, counts): a dropped record carries ``drop_reason`` and ``drop_detail`` of its first
    issue; counts has ``kept`` and one entry per reason."""
    kept, dropped, counts = [], [], Counter()
    for record in records:
        issues = [issue for text in _judged_texts(record) for issue in tone_issues(text, cfg)]
        if issues:
            dropped.append({**record, "drop_reason": issues[0][0], "drop_detail": issues[0][1]})
            counts[issues[0][0]] += 1
        else:
            kept.append(dict(record))
            counts["kept"] += 1
    return kept, dropped, counts
