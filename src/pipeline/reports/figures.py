"""What every report's plots share: matplotlib without a display, and a figure as an inline PNG."""

from __future__ import annotations

import base64
import io
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def pyplot() -> ModuleType:
    """Return ``matplotlib.pyplot`` on the Agg backend (imported on first use: reports are optional work)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_base64(fig: Figure) -> str:
    """Return the figure as a base64 PNG (for ``<img src='data:image/png;base64,...'>``) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    pyplot().close(fig)
    return base64.b64encode(buffer.getvalue()).decode()
