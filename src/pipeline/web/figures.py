"""The monitoring page's plots, drawn on the server as inline PNGs (no script, nothing fetched by the browser)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np

from pipeline.alerts import GLOBAL
from pipeline.reports.figures import png_base64, pyplot
from pipeline.web.queries import DriftCell, HeadlinePoint, Period

#: Drift scores are drawn up to this many thresholds; larger ones get the darkest colour.
SCORE_CEILING = 3.0


def _site_name(site: str) -> str:
    return "all sites" if site == GLOBAL else site


def headline_png(points: Sequence[HeadlinePoint], period: Period, *, title_site: str | None = None) -> str | None:
    """Return a base64 PNG of the headline metric over time, one line per site; None without data.

    Args:
        points: windows with the share of successful studies filtered as normal (``queries.headline_series``).
        period: the days shown, for the title.
        title_site: the one site drawn (for its title), or None for every site.
    """
    drawn = [p for p in points if p.share_filtered_normal is not None]
    if not drawn:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9.5, 3.0) if title_site is None else (6.2, 2.6), dpi=110)
    for site in sorted({p.site for p in drawn}, key=lambda s: (s == GLOBAL, s)):
        mine = sorted((p for p in drawn if p.site == site), key=lambda p: p.window_start)
        style = {"color": "0.35", "linestyle": "--", "linewidth": 1.2} if site == GLOBAL else {"linewidth": 1.6}
        ax.plot(
            [p.window_start for p in mine],
            [100.0 * float(p.share_filtered_normal or 0.0) for p in mine],
            marker="o",
            markersize=3,
            label=_site_name(site),
            **style,
        )
    # the whole period on every chart, so a site that joined late or one window alone reads on the same time axis
    ax.set_xlim(period.start, period.end)
    who = "every site" if title_site is None else _site_name(title_site)
    ax.set_title(f"Share of studies filtered as normal, {who}\n{period.label}", fontsize=9)
    ax.set_xlabel("window start (UTC)", fontsize=8)
    ax.set_ylabel("% of successful studies", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if title_site is None:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    fig.autofmt_xdate()
    return png_base64(fig)


def _feature_order(features: set[str]) -> list[str]:
    """Return features in the drift check's group order (tags, image, predictions, uncertainty, embedding)."""
    from pipeline.monitor.drift import GROUP

    groups = list(dict.fromkeys(GROUP.values()))
    known = list(GROUP)

    def rank(feature: str) -> tuple[int, int, str]:
        if feature in GROUP:
            return (groups.index(GROUP[feature]), known.index(feature), feature)
        return (len(groups), 0, feature)

    return sorted(features, key=rank)


def drift_heatmap_png(
    cells: Sequence[DriftCell], site: str, period: Period, *, days: Sequence[date] | None = None
) -> str | None:
    """Return a base64 PNG of one site's drift scores by feature (rows) and day (columns); None without data.

    A cell is the feature's largest distance over its calibrated threshold that day: shades of blue up to 1
    (the threshold), orange to red above, clipped at :data:`SCORE_CEILING`, grey where no score was stored;
    ``x`` marks a cell above 1.

    Args:
        cells: drift scores (``queries.drift_scores``); only ``site``'s are drawn.
        site: the site.
        period: the days described, for the title.
        days: the columns (so that every site's map has the same ones); by default the site's own days.
    """
    mine = [c for c in cells if c.site == site]
    if not mine:
        return None
    from matplotlib.colors import LinearSegmentedColormap

    plt = pyplot()
    days = sorted(set(days or ()) | {c.day for c in mine})
    features = _feature_order({c.feature for c in mine})
    row = {f: i for i, f in enumerate(features)}
    col = {d: j for j, d in enumerate(days)}
    score = np.full((len(features), len(days)), np.nan)
    for c in mine:
        score[row[c.feature], col[c.day]] = min(c.score, SCORE_CEILING)
    fig, ax = plt.subplots(figsize=(2.6 + 0.42 * len(days), 0.9 + 0.2 * len(features)), dpi=110)
    # pale blue below the threshold, orange to dark red above it: the break at 1 is what matters
    at_threshold = 1.0 / SCORE_CEILING
    cmap = LinearSegmentedColormap.from_list(
        "drift_score",
        [(0.0, "#f7fbff"), (at_threshold, "#9ecae1"), (at_threshold + 1e-3, "#fdd49e"), (1.0, "#990000")],
    ).with_extremes(bad="#e0e0e0")  # grey: no score that day (too few studies, no reference yet)
    image = ax.imshow(
        np.ma.masked_invalid(score), aspect="auto", cmap=cmap, vmin=0.0, vmax=SCORE_CEILING, interpolation="nearest"
    )
    for i, j in zip(*np.nonzero(np.nan_to_num(score) > 1.0), strict=True):
        ax.text(j, i, "x", ha="center", va="center", fontsize=7, color="white" if score[i, j] > 2.0 else "black")
    ax.set_xticks(range(len(days)), [f"{d:%m-%d}" for d in days], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(features)), features, fontsize=7)
    ax.set_xlabel("day (UTC)", fontsize=8)
    ax.set_ylabel("feature", fontsize=8)
    ax.set_title(f"Drift score by feature and day, {_site_name(site)}\n{period.label}", fontsize=9)
    bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    bar.set_label("distance / threshold (x: above 1)", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    return png_base64(fig)
