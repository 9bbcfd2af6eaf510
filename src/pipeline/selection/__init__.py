"""Selection for labeling: which studies a radiologist should look at, and why (``select_for_relabeling``)."""

from pipeline.selection.select import (
    PROJECT,
    Selection,
    SelectionConfig,
    duplicate_radius,
    open_drift_sites,
    pick,
    read_candidates,
    score_candidates,
    select_for_relabeling,
    spread,
)

__all__ = [
    "PROJECT",
    "Selection",
    "SelectionConfig",
    "duplicate_radius",
    "open_drift_sites",
    "pick",
    "read_candidates",
    "score_candidates",
    "select_for_relabeling",
    "spread",
]
