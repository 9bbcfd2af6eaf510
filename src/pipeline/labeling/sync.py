"""Pull finished annotations from Label Studio into ``labels``; send disagreements to adjudication.

Incremental and crash-safe: each project's tasks are read in order of their last change (Label Studio bumps a
task's ``updated_at`` whenever one of its annotations is saved or deleted), from the newest annotation time
already stored, one page per transaction. A sync that dies after some pages has stored a prefix in time, so the
next sync starts where that prefix ends; pages read twice are upserts by annotation id and change nothing.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from label_studio_sdk import LabelStudio
from sqlalchemy.engine import Connection, Engine

from pipeline.labeling.agreement import AgreementResult, agreement
from pipeline.labeling.interface import DEFAULT_PREFIX, ProjectKind
from pipeline.labeling.parse import IncompleteAnnotation, LabelRow, label_row
from pipeline.labeling.projects import ensure_project, find_project
from pipeline.labeling.tasks import find_tasks, task_page
from pipeline.store import insert_for
from pipeline.store.read import labels_not_in_a_snapshot
from pipeline.store.schema import QueueStatus, labels, relabel_queue

log = logging.getLogger(__name__)

PAGE_SIZE = 100
#: Labeled studies no snapshot holds yet that make a sync announce new labels (``PIPELINE_NEW_LABELS_THRESHOLD``).
DEFAULT_NEW_LABELS_THRESHOLD = 50
"""Tasks read (and stored in one transaction) per page."""

_LS_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # the only datetime format Label Studio's data-manager filters accept

LABELED_KINDS: tuple[ProjectKind, ...] = (
    ProjectKind.RELABELING,
    ProjectKind.ERROR_REVIEW,
    ProjectKind.CLINICAL_QA,
)
"""Projects whose disagreements go to adjudication."""


@dataclass(frozen=True)
class PageResult:
    """One committed page of one project's sync."""

    project: str
    tasks: int
    new: int
    updated: int
    removed: int
    skipped: int
    cursor: datetime | None


@dataclass(frozen=True)
class ProjectSync:
    """What a sync did for one project.

    Args:
        project: the project kind.
        project_id: its Label Studio id, None when it does not exist (nothing to sync).
        new: labels stored for the first time.
        updated: labels whose annotation changed since the last sync.
        removed: labels whose annotation was deleted or cancelled in Label Studio.
        skipped: annotations that are no label (cancelled/skipped, or neither verdict nor unusable).
        agreement: agreement on normal versus abnormal over all of the project's stored labels.
    """

    project: str
    project_id: int | None
    new: int
    updated: int
    removed: int
    skipped: int
    agreement: AgreementResult


@dataclass(frozen=True)
class SyncResult:
    """What one sync did; ``new_labels_ready`` is the DAG's cue to publish the "new labels" asset."""

    projects: tuple[ProjectSync, ...]
    sent_to_adjudication: tuple[str, ...]
    new_labels_threshold: int
    pending: int = 0  # labeled studies no snapshot holds yet, after this sync

    @property
    def new(self) -> int:
        """Labels stored for the first time, all projects."""
        return sum(p.new for p in self.projects)

    @property
    def updated(self) -> int:
        """Labels changed, all projects."""
        return sum(p.updated for p in self.projects)

    @property
    def new_labels_ready(self) -> bool:
        """True when this sync brought labels and the labeled studies no snapshot holds yet reach
        ``new_labels_threshold`` (so small daily syncs add up, and a retraining that used them resets the count)."""
        return self.new > 0 and self.pending >= self.new_labels_threshold

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready summary (for ``--json`` and XCom)."""
        return {
            "new": self.new,
            "updated": self.updated,
            "new_labels_ready": self.new_labels_ready,
            "pending": self.pending,
            "new_labels_threshold": self.new_labels_threshold,
            "sent_to_adjudication": len(self.sent_to_adjudication),
            "projects": {
                p.project: {
                    "project_id": p.project_id,
                    "new": p.new,
                    "updated": p.updated,
                    "removed": p.removed,
                    "skipped": p.skipped,
                    "kappa": p.agreement.value,
                    "kappa_statistic": p.agreement.statistic,
                    "multiply_labeled_studies": p.agreement.studies,
                    "disagreements": p.agreement.disagreements,
                }
                for p in self.projects
            },
        }


def sync_annotations(
    engine: Engine,
    client: LabelStudio,
    *,
    now: datetime,
    prefix: str = DEFAULT_PREFIX,
    page_size: int = PAGE_SIZE,
    new_labels_threshold: int = DEFAULT_NEW_LABELS_THRESHOLD,
    on_page: Callable[[PageResult], None] | None = None,
) -> SyncResult:
    """Store every annotation changed since the last sync, update the queue, and send disagreements to adjudication.

    Args:
        engine: the store.
        client: a Label Studio client (:func:`pipeline.labeling.make_client`).
        now: the sync's time (UTC), stored as ``labels.synced_at``.
        prefix: project-title prefix (``PIPELINE_LABEL_STUDIO_PROJECT_PREFIX``).
        page_size: tasks per page (one transaction each).
        new_labels_threshold: labeled studies no snapshot holds that make ``new_labels_ready``
            (``PIPELINE_NEW_LABELS_THRESHOLD``).
        on_page: called after each committed page (progress reporting).

    Raises:
        pipeline.labeling.LabelStudioUnavailable: the server did not answer; committed pages stay, nothing else
            is written.
    """
    threshold = new_labels_threshold
    results = []
    users: dict[int, str] | None = None
    for kind in ProjectKind:
        project_id = find_project(client, kind, prefix=prefix)
        counts = {"new": 0, "updated": 0, "removed": 0, "skipped": 0}
        if project_id is not None:
            users = users if users is not None else annotator_emails(client)
            pages = _sync_project(engine, client, kind, project_id, now=now, page_size=page_size, users=users)
            for page in pages:
                for key in counts:
                    counts[key] += getattr(page, key)
                if on_page is not None:
                    on_page(page)
        results.append(ProjectSync(kind.value, project_id, **counts, agreement=project_agreement(engine, kind)))
    sent = send_to_adjudication(engine, client, prefix=prefix)
    result = SyncResult(tuple(results), sent, threshold, labels_not_in_a_snapshot(engine))
    log.info("label sync: %s", json.dumps(result.as_dict()))
    return result


def annotator_emails(client: LabelStudio) -> dict[int, str]:
    """Return Label Studio user id -> e-mail of the organisation's users (how ``labels.annotator`` names them)."""
    return {u.id: u.email for u in client.users.list() if u.id is not None and u.email}


def _newest_label(engine: Engine, kind: ProjectKind) -> datetime | None:
    with engine.connect() as conn:
        newest = conn.execute(sa.select(sa.func.max(labels.c.updated_at)).where(labels.c.project == kind.value))
        value = newest.scalar_one_or_none()
    if value is not None and value.tzinfo is None:  # SQLite hands timestamps back naive (they are stored in UTC)
        value = value.replace(tzinfo=UTC)
    return value


def _changed_query(since: datetime | None) -> str:
    items: list[dict[str, Any]] = [
        {"filter": "filter:tasks:total_annotations", "operator": "greater", "type": "Number", "value": 0}
    ]
    if since is not None:
        items.append(
            {
                "filter": "filter:tasks:updated_at",
                "operator": "greater_or_equal",
                "type": "Datetime",
                "value": _utc(since),
            }
        )
    return json.dumps({"filters": {"conjunction": "and", "items": items}, "ordering": ["tasks:updated_at"]})


def _utc(moment: datetime) -> str:
    offset = moment.utcoffset() or timedelta(0)
    return (moment - offset).replace(tzinfo=None).strftime(_LS_TIME)


def _sync_project(
    engine: Engine,
    client: LabelStudio,
    kind: ProjectKind,
    project_id: int,
    *,
    now: datetime,
    page_size: int,
    users: Mapping[int, str],
) -> Iterable[PageResult]:
    # Keyset paging on the task's updated_at: a task changed while we read moves behind the cursor, not past it.
    cursor = _newest_label(engine, kind)
    while True:
        tasks, _ = task_page(client, project_id, query=_changed_query(cursor), page_size=page_size)
        if not tasks:
            return
        result = _store_page(engine, kind, tasks, now=now, users=users)
        newest = max(t.updated_at for t in tasks if t.updated_at is not None)
        yield PageResult(kind.value, len(tasks), result[0], result[1], result[2], result[3], newest)
        if len(tasks) < page_size:
            return
        if cursor is not None and newest <= cursor:
            # A full page of tasks changed in the same microsecond: step past them rather than loop.
            log.warning("project %s: %d tasks share updated_at %s; stepping past", kind, len(tasks), newest)
            newest = cursor + timedelta(microseconds=1)
        cursor = newest


def _store_page(
    engine: Engine, kind: ProjectKind, tasks: Sequence[Any], *, now: datetime, users: Mapping[int, str]
) -> tuple[int, int, int, int]:
    rows: list[LabelRow] = []
    skipped = 0
    for task in tasks:
        study_id = str((task.data or {}).get("study_id") or "")
        if not study_id:
            log.warning("project %s: task %s has no study_id in its data; ignored", kind, task.id)
            continue
        for annotation in task.annotations or []:
            annotation = dict(annotation)
            if annotation.get("was_cancelled"):
                skipped += 1
                continue
            if isinstance(annotation.get("completed_by"), int):  # the tasks list gives the user's id only
                user_id = annotation["completed_by"]
                annotation["completed_by"] = {"id": user_id, "email": users.get(user_id)}
            try:
                rows.append(
                    label_row(annotation, task_id=int(task.id), project=kind.value, study_id=study_id, synced_at=now)
                )
            except IncompleteAnnotation:
                skipped += 1
    task_ids = [int(t.id) for t in tasks]
    with engine.begin() as conn:
        before = {
            r.annotation_id: r.updated_at
            for r in conn.execute(
                sa.select(labels.c.annotation_id, labels.c.updated_at).where(labels.c.task_id.in_(task_ids))
            )
        }
        keep = {r.annotation_id for r in rows}
        removed = conn.execute(
            labels.delete().where(labels.c.task_id.in_(task_ids), labels.c.annotation_id.notin_(keep))
        ).rowcount
        if rows:
            conn.execute(_upsert_labels(conn), [r.as_dict() for r in rows])
        _mark_labeled(conn, kind, rows)
    new = sum(1 for r in rows if r.annotation_id not in before)
    updated = sum(
        1 for r in rows if r.annotation_id in before and not _same_time(before[r.annotation_id], r.updated_at)
    )
    return new, updated, removed, skipped


def _same_time(stored: datetime, fresh: datetime) -> bool:
    if stored.tzinfo is None:  # SQLite
        stored = stored.replace(tzinfo=UTC)
    return stored == fresh


def _upsert_labels(conn: Connection) -> sa.Executable:
    insert = insert_for(conn)
    stmt = insert(labels)
    changed = {c.name: stmt.excluded[c.name] for c in labels.columns if c.name != "annotation_id"}
    return stmt.on_conflict_do_update(index_elements=["annotation_id"], set_=changed)


def _mark_labeled(conn: Connection, kind: ProjectKind, rows: Sequence[LabelRow]) -> None:
    first: dict[str, datetime] = {}
    for r in rows:
        first[r.study_id] = min(first.get(r.study_id, r.created_at), r.created_at)
    q = relabel_queue
    if kind is ProjectKind.ADJUDICATION:
        waiting = [QueueStatus.ADJUDICATION.value]  # the adjudicated label settles the study
    else:
        waiting = [QueueStatus.QUEUED.value, QueueStatus.PUSHED.value]
    for study_id, labeled_at in first.items():
        conn.execute(
            q.update()
            .where(q.c.study_id == study_id, q.c.status.in_(waiting))
            .values(status=QueueStatus.LABELED.value, labeled_at=labeled_at)
        )


def _votes(engine: Engine, kinds: Sequence[ProjectKind]) -> dict[str, dict[str, list[bool]]]:
    """Return project -> study id -> usable ``abnormal`` votes in annotation order."""
    query = (
        sa.select(labels.c.project, labels.c.study_id, labels.c.abnormal)
        .where(labels.c.project.in_([k.value for k in kinds]), labels.c.abnormal.is_not(None))
        .order_by(labels.c.annotation_id)
    )
    votes: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    with engine.connect() as conn:
        for row in conn.execute(query):
            votes[row.project][row.study_id].append(bool(row.abnormal))
    return votes


def project_agreement(engine: Engine, kind: ProjectKind | str) -> AgreementResult:
    """Return the agreement on normal versus abnormal over the stored labels of the project of ``kind``."""
    kind = ProjectKind(kind)
    return agreement(kind.value, _votes(engine, [kind]).get(kind.value, {}))


def disagreements(engine: Engine) -> dict[str, tuple[str, Mapping[str, list[bool]]]]:
    """Return study id -> (its project, its votes) for studies whose annotators disagree and that await adjudication.

    A study already adjudicated (it has an ``adjudication`` label) or already sent (queue status
    ``adjudication``) is left out, as are studies without a queue row that are already in the
    adjudication project (the caller checks Label Studio for those).
    """
    adjudicated = sa.select(labels.c.study_id).where(labels.c.project == ProjectKind.ADJUDICATION.value)
    with engine.connect() as conn:
        settled = {r.study_id for r in conn.execute(adjudicated)}
        settled |= {
            r.study_id
            for r in conn.execute(
                sa.select(relabel_queue.c.study_id).where(relabel_queue.c.status == QueueStatus.ADJUDICATION.value)
            )
        }
    found: dict[str, tuple[str, Mapping[str, list[bool]]]] = {}
    for project, by_study in _votes(engine, LABELED_KINDS).items():
        for study_id, votes in by_study.items():
            if study_id not in settled and len(set(votes)) > 1:
                found[study_id] = (project, {"abnormal": votes})
    return found


def send_to_adjudication(engine: Engine, client: LabelStudio, *, prefix: str = DEFAULT_PREFIX) -> tuple[str, ...]:
    """Create an adjudication task for every study whose annotators disagree; return the study ids sent.

    The task copies the original task's data (same image, no new rendering) and its prediction, and adds the
    votes. A task already there (a run that died before recording it) is found by study id, not created again.
    Queue rows move to ``adjudication``.
    """
    pending = disagreements(engine)
    if not pending:
        return ()
    project_id = ensure_project(client, ProjectKind.ADJUDICATION, prefix=prefix)
    existing = find_tasks(client, project_id, sorted(pending))
    with engine.connect() as conn:
        source_tasks = {
            r.study_id: r.task_id
            for r in conn.execute(
                sa.select(labels.c.study_id, labels.c.task_id, labels.c.project).where(
                    labels.c.study_id.in_(list(pending))
                )
            )
            if r.project == pending[r.study_id][0]
        }
    payloads = []
    for study_id in sorted(pending.keys() - existing.keys()):
        source = client.tasks.get(id=str(source_tasks[study_id]))
        project, votes = pending[study_id]
        abnormal = sum(votes["abnormal"])
        data = {
            **(source.data or {}),
            "source_project": project,
            "source_task": source.id,
            "votes": f"{abnormal} abnormal, {len(votes['abnormal']) - abnormal} normal",
        }
        task: dict[str, Any] = {"data": data}
        predictions = [
            {k: p[k] for k in ("result", "score", "model_version") if p.get(k) is not None}
            for p in (dict(x) for x in (getattr(source, "predictions", None) or []))
        ]
        if predictions:
            task["predictions"] = predictions
        payloads.append(task)
    if payloads:
        client.projects.import_tasks(id=project_id, request=cast(Any, payloads), return_task_ids=True)
    with engine.begin() as conn:
        conn.execute(
            relabel_queue.update()
            .where(
                relabel_queue.c.study_id.in_(list(pending)),
                relabel_queue.c.status.in_([QueueStatus.PUSHED.value, QueueStatus.LABELED.value]),
            )
            .values(status=QueueStatus.ADJUDICATION.value)
        )
    log.info("sent %d studies to adjudication (%d created, %d found)", len(pending), len(payloads), len(existing))
    return tuple(sorted(pending))
