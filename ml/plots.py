"""Matplotlib figures drawn off-screen (Agg) and returned as PNG bytes."""

from __future__ import annotations

import io
from typing import Any


def agg_subplots(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``plt.subplots(*args, **kwargs)`` on the Agg backend (no display): ``(figure, axes)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def figure_png(fig: Any) -> bytes:
    """``fig`` laid out tight, as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
