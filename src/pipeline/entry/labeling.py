"""The labeling entries: pick studies for the radiologists, push them to Label Studio, bring the labels home
(``select_for_relabeling``, ``sync_annotations``; ``pipeline select``, ``push``, ``sync``)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.resources import Resources


def select(res: Resources, day: date | str, budget: int | None = None, *, studies: bool = False) -> dict[str, Any]:
    """Pick the day's studies for labeling into ``relabel_queue``; return what was picked and why.

    The budget is ``budget`` or ``PIPELINE_RELABEL_DAILY_BUDGET``, at most ``PIPELINE_RELABEL_SITE_CAP`` of it per
    site. Running it again for the same day tops the day up to its budget (nothing, when nothing changed).
    ``studies`` adds the picked studies themselves (pseudonymous ids, site, strategy, reasons).

    Raises:
        pydantic.ValidationError: a bad budget or site cap, named.
    """
    from pipeline.selection import SelectionConfig, select_for_relabeling

    settings = res.settings
    config = SelectionConfig(
        budget=settings.relabel_daily_budget if budget is None else budget, site_cap=settings.relabel_site_cap
    )
    summary = select_for_relabeling(res.store, date.fromisoformat(str(day)), config).as_json()
    if not studies:
        summary.pop("studies")
    return summary


def selection_day(param: str | None, event_days: list[str | None], run_at: datetime) -> str:
    """The day a selection run picks for: the ``day`` param, else the newest drift alert's day, else the day
    before the run."""
    if param:
        return str(param)
    days = [d for d in event_days if d]
    if days:
        return max(days)
    return (run_at - timedelta(days=1)).date().isoformat()


def push(res: Resources) -> dict[str, Any]:
    """Turn every queued pick into a Label Studio task (rendered image, the model's answer pre-filled); return
    counts. Tasks a crashed run created are found again, not duplicated.

    Raises:
        pipeline.labeling.LabelStudioUnavailable: the server did not answer, named.
    """
    from pipeline.labeling import push_queued

    server = res.label_studio
    result = push_queued(
        res.store,
        server.client(),
        server.document_root,
        prefix=server.project_prefix,
        image_size_px=server.image_size_px,
    )
    return {
        "created": result.created,
        "found": result.found,
        "pushed": result.pushed,
        "unrenderable": list(result.unrenderable),
        "per_project": dict(result.per_project),
    }


def sync(res: Resources, now: datetime | None = None) -> dict[str, Any]:
    """Pull finished annotations into the label store; return counts, agreement and ``new_labels_ready``.

    Raises:
        pipeline.labeling.LabelStudioUnavailable: the server did not answer, named.
    """
    from pipeline.labeling import sync_annotations

    result = sync_annotations(
        res.store,
        res.label_studio.client(),
        now=now or datetime.now(UTC),
        prefix=res.label_studio.project_prefix,
        new_labels_threshold=res.settings.new_labels_threshold,
    )
    return result.as_dict()
