"""The result every curation step returns: kept rows, dropped rows with a reason, and counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd


@dataclass
class StepResult:
    """Output of one curation step (datatrove-style: every drop has a reason and is counted)."""

    kept: pd.DataFrame
    dropped: pd.DataFrame
    stats: dict[str, float | int] = field(default_factory=dict)

    def drops_by_reason(self) -> dict[str, int]:
        if self.dropped.empty or "reason" not in self.dropped:
            return {}
        return dict(Counter(self.dropped["reason"].astype(str)).most_common())

    def summary(self) -> dict[str, float | int]:
        """Counts in/out plus ``dropped/<reason>`` entries, merged over the step's own stats."""
        out: dict[str, float | int] = {
            "docs_in": len(self.kept) + len(self.dropped),
            "docs_out": len(self.kept),
            "docs_dropped": len(self.dropped),
        }
        out.update({f"dropped/{r}": n for r, n in self.drops_by_reason().items()})
        out.update(self.stats)
        return out


def make_dropped(
    rows: pd.DataFrame, reason: str | pd.Series, detail: str | pd.Series | None = None
) -> pd.DataFrame:
    """Build the side table of dropped documents (``id, url, reason, detail``) from dropped rows."""
    out = pd.DataFrame({"id": rows["id"].to_numpy(), "url": rows["url"].to_numpy()})
    out["reason"] = reason.to_numpy() if isinstance(reason, pd.Series) else reason
    if detail is not None:
        out["detail"] = detail.to_numpy() if isinstance(detail, pd.Series) else detail
    else:
        out["detail"] = ""
    return out


def empty_dropped() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": pd.Series(dtype=str),
            "url": pd.Series(dtype=str),
            "reason": pd.Series(dtype=str),
            "detail": pd.Series(dtype=str),
        }
    )
