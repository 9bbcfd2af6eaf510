"""Label Studio tasks: one per picked study, with its rendered image and the model's answer pre-filled.

Every task carries the pseudonymous ``study_id`` in its data: a re-run, or a run after a crash between
creating the task and recording it, finds the task by that id instead of creating a second one.
Only pixels and pseudonymous fields leave the store; the PNG is named by the study id and has no
text chunks.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import sqlalchemy as sa
from label_studio_sdk import LabelStudio
from sqlalchemy.engine import Engine

from pipeline.dicom import DicomError, read_pixels, render_png
from pipeline.labeling.interface import DEFAULT_IMAGE_SIZE_PX, DEFAULT_PREFIX, IMAGE_KEY, VERDICT
from pipeline.labeling.projects import ensure_project, project_folder
from pipeline.store.schema import QueueStatus, inference_logs, relabel_queue, studies

log = logging.getLogger(__name__)

LOCAL_FILES_URL = "/data/local-files/?d="
"""How Label Studio serves a file under its local-files document root."""

BATCH_SIZE = 50
"""Tasks created per request (and looked up per request by study id)."""


@dataclass(frozen=True)
class QueuedStudy:
    """A ``relabel_queue`` row waiting for its task, with what the task shows."""

    study_id: str
    site: str
    project: str
    model_version: str
    strategy: str
    reasons: str
    priority: float
    prob_abnormal: float | None
    dicom_uri: str
    decision: str | None


@dataclass(frozen=True)
class PushResult:
    """What one push did.

    Args:
        created: tasks created now.
        found: queue rows whose task already existed (a run that died before recording it), now recorded.
        unrenderable: study ids whose DICOM could not be read; they stay queued.
        per_project: project kind -> tasks created or found.
    """

    created: int = 0
    found: int = 0
    unrenderable: tuple[str, ...] = ()
    per_project: dict[str, int] = field(default_factory=dict)

    @property
    def pushed(self) -> int:
        """Queue rows moved to ``pushed``."""
        return self.created + self.found


def image_url(document_root: Path, png: Path) -> str:
    """Return the URL under which Label Studio serves ``png`` from its local-files ``document_root``."""
    return LOCAL_FILES_URL + quote(png.relative_to(document_root).as_posix(), safe="/")


def render_study(dicom_uri: str, target: Path, *, size_px: int) -> Path:
    """Render the DICOM at ``dicom_uri`` (a path or an fsspec URL) to a windowed PNG at ``target``; return it.

    Args:
        dicom_uri: ``studies.dicom_uri``.
        target: the PNG path (written atomically).
        size_px: longest side of the PNG in pixels.

    Raises:
        pipeline.dicom.DicomError: the file cannot be read as a chest radiograph.
    """
    if "://" in dicom_uri and not dicom_uri.startswith("file://"):
        import fsspec

        with fsspec.open(dicom_uri, "rb") as handle:
            pixels = read_pixels(handle)
    else:
        pixels = read_pixels(Path(dicom_uri.removeprefix("file://")))
    written = render_png(pixels, target, size_px)
    assert written is not None
    return written


def task_payload(study: QueuedStudy, url: str) -> dict[str, Any]:
    """Return the task to import: pseudonymous data for the data manager, and the model's answer as a prediction.

    The data holds ``site``, ``model_answer`` and ``score`` so Label Studio's data manager can filter and sort
    by them; the prediction's ``score`` is ``prob_abnormal``.
    """
    picks = json.loads(study.reasons) if study.reasons else {}
    data: dict[str, Any] = {
        IMAGE_KEY: url,
        "study_id": study.study_id,
        "site": study.site,
        "model_version": study.model_version,
        "model_answer": study.decision or "unknown",
        "score": None if study.prob_abnormal is None else round(study.prob_abnormal, 4),
        "strategy": study.strategy,
        "reasons": ", ".join(picks) if isinstance(picks, Mapping) else str(picks),
        "reason_details": study.reasons,
        "priority": round(study.priority, 4),
    }
    task: dict[str, Any] = {"data": data}
    if study.decision is not None:
        prediction: dict[str, Any] = {
            "model_version": study.model_version,
            "result": [
                {"from_name": VERDICT, "to_name": IMAGE_KEY, "type": "choices", "value": {"choices": [study.decision]}}
            ],
        }
        if study.prob_abnormal is not None:
            prediction["score"] = study.prob_abnormal
        task["predictions"] = [prediction]
    return task


def study_id_query(study_ids: Iterable[str]) -> str:
    """Return a data-manager query (JSON) matching the tasks whose ``data.study_id`` is one of ``study_ids``."""
    items = [
        {"filter": "filter:tasks:data.study_id", "operator": "equal", "type": "String", "value": s} for s in study_ids
    ]
    return json.dumps({"filters": {"conjunction": "or", "items": items}, "ordering": ["tasks:id"]})


def find_tasks(client: LabelStudio, project_id: int, study_ids: Sequence[str]) -> dict[str, int]:
    """Return study id -> task id of the tasks of ``project_id`` for ``study_ids`` (the oldest task if several)."""
    found: dict[str, int] = {}
    for batch in _batches(list(study_ids), BATCH_SIZE):
        tasks, _ = task_page(
            client, project_id, query=study_id_query(batch), fields="task_only", page_size=len(batch) * 2
        )
        for task in tasks:
            study_id = str((task.data or {}).get("study_id"))
            if study_id in batch and task.id is not None and (study_id not in found or task.id < found[study_id]):
                found[study_id] = task.id
    return found


def task_page(
    client: LabelStudio,
    project_id: int,
    *,
    query: str | None = None,
    fields: str = "all",
    page_size: int = BATCH_SIZE,
    page: int = 1,
) -> tuple[list[Any], int]:
    """Return one page of the tasks of ``project_id`` (data-manager ``query``) and the number of tasks matching.

    The SDK's pager asks for one page past the end (a 404), so callers page by the total instead.
    """
    pager: Any = client.tasks.list(project=project_id, query=query, fields=fields, page_size=page_size, page=page)
    total = int(getattr(pager.response, "total", 0) or 0)
    return list(pager.items or []), total


def queued_studies(engine: Engine, *, limit: int | None = None) -> list[QueuedStudy]:
    """Return the ``queued`` rows of ``relabel_queue``, highest priority first, with their DICOM and model answer."""
    q = relabel_queue
    query = (
        sa.select(
            q.c.study_id,
            q.c.site,
            q.c.project,
            q.c.model_version,
            q.c.strategy,
            q.c.reasons,
            q.c.priority,
            q.c.prob_abnormal,
            studies.c.dicom_uri,
            inference_logs.c.decision,
        )
        .join(studies, studies.c.study_id == q.c.study_id)
        .outerjoin(
            inference_logs,
            (inference_logs.c.study_id == q.c.study_id) & (inference_logs.c.model_version == q.c.model_version),
        )
        .where(q.c.status == QueueStatus.QUEUED.value)
        .order_by(q.c.priority.desc(), q.c.picked_at, q.c.study_id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [QueuedStudy(**row._mapping) for row in conn.execute(query)]


def push_queued(
    engine: Engine,
    client: LabelStudio,
    document_root: Path | str,
    *,
    limit: int | None = None,
    prefix: str = DEFAULT_PREFIX,
    image_size_px: int = DEFAULT_IMAGE_SIZE_PX,
    now: datetime | None = None,
) -> PushResult:
    """Create a Label Studio task for every ``queued`` study and mark it ``pushed``; return what was done.

    Each batch goes: render the PNGs under ``document_root``, look the studies up in the project, import the
    missing ones with their prediction in one request, then record task ids in one transaction. A crash at any
    point leaves rows ``queued`` whose tasks the next run finds by study id.

    Args:
        engine: the store.
        client: a Label Studio client (:func:`pipeline.labeling.make_client`).
        document_root: Label Studio's local-files document root (``settings.label_studio_document_root``).
        limit: push at most this many studies (highest priority first).
        prefix: project-title prefix (``PIPELINE_LABEL_STUDIO_PROJECT_PREFIX``).
        image_size_px: longest side of the PNGs (``PIPELINE_LABEL_STUDIO_IMAGE_SIZE_PX``).
        now: the time recorded as ``pushed_at`` (default: the current UTC time).

    Raises:
        pipeline.labeling.LabelStudioUnavailable: the server did not answer; rows of earlier batches stay pushed,
            the rest stay queued.
    """
    root = Path(document_root)
    size = image_size_px
    created = found = 0
    unrenderable: list[str] = []
    per_project: dict[str, int] = {}
    queued = queued_studies(engine, limit=limit)
    for kind in sorted({s.project for s in queued}):
        project_id = ensure_project(client, kind, prefix=prefix, document_root=root)
        folder = project_folder(root, kind, prefix=prefix)
        for batch in _batches([s for s in queued if s.project == kind], BATCH_SIZE):
            existing = find_tasks(client, project_id, [s.study_id for s in batch])
            payloads = []
            for study in batch:
                if study.study_id in existing:
                    continue
                png = folder / f"{study.study_id}.png"
                try:
                    render_study(study.dicom_uri, png, size_px=size)
                except (DicomError, OSError) as exc:
                    log.error("study %s: cannot render its image for labeling: %s", study.study_id, exc)
                    unrenderable.append(study.study_id)
                    continue
                payloads.append(task_payload(study, image_url(root, png)))
            if payloads:
                client.projects.import_tasks(id=project_id, request=cast(Any, payloads), return_task_ids=True)
            task_ids = find_tasks(client, project_id, [s.study_id for s in batch])
            missing = {p["data"]["study_id"] for p in payloads} - task_ids.keys()
            if missing:
                raise RuntimeError(f"Label Studio did not create tasks for studies {sorted(missing)}")
            recorded = _record_pushed(engine, task_ids, now or datetime.now(UTC))
            created += len(payloads)
            found += recorded - len(payloads)
            per_project[kind] = per_project.get(kind, 0) + recorded
    log.info("pushed %d studies to Label Studio (%d created, %d found)", created + found, created, found)
    return PushResult(created=created, found=found, unrenderable=tuple(unrenderable), per_project=per_project)


def _record_pushed(engine: Engine, task_ids: Mapping[str, int], now: datetime) -> int:
    q = relabel_queue
    recorded = 0
    with engine.begin() as conn:
        for study_id, task_id in task_ids.items():
            recorded += conn.execute(
                q.update()
                .where(q.c.study_id == study_id, q.c.status == QueueStatus.QUEUED.value)
                .values(task_id=task_id, status=QueueStatus.PUSHED.value, pushed_at=now)
            ).rowcount
    return recorded


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
