"""The relabeling loop against a real Label Studio and real PostgreSQL: push, annotate (bot), sync, adjudicate.

One simulated world (real DICOM files, tags, ground truth and inference logs from a tiny untrained model) is built
once per module into a template database; each test works on its own copy and its own project-title prefix on
the session's Label Studio server. The restart test runs a server of its own.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pydicom
import pytest
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.engine import Engine

from pipeline.demo import annotator as bot
from pipeline.demo.stack.label_studio import LabelStudio, LabelStudioAdmin, _child_env, start_label_studio
from pipeline.demo.stack.ports import free_port
from pipeline.demo.stack.process import ManagedProcess, start_process
from pipeline.labeling import (
    LabelStudioUnavailable,
    ProjectKind,
    ensure_project,
    find_project,
    make_client,
    project_folder,
    push_queued,
    sync_annotations,
)
from pipeline.labeling.tasks import task_page
from pipeline.store import make_engine
from pipeline.store.schema import QueueStatus, inference_logs, labels, relabel_queue
from tests.harness import TEST_LABEL_STUDIO_ADMIN
from tests.harness.postgres import drop_database
from tests.harness.shared import copy_database
from tests.worlds import small_world

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
IMAGE_PX = 64
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
PHI_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID")


@dataclass(frozen=True)
class World:
    template_url: str
    storage: Path


@pytest.fixture(scope="module")
def world(pg_database_factory: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> World:
    """60 simulated studies (3 sites x 20, one day) with DICOM files, ground truth and inference logs."""
    url = pg_database_factory()
    storage = tmp_path_factory.mktemp("dicom")
    small_world(url, storage, per_site=20, image_px=IMAGE_PX)
    return World(url, storage)


@pytest.fixture
def store(world: World, pg_admin_url: str) -> Iterator[Engine]:
    """A fresh copy of the world's database (dropped after the test)."""
    url = copy_database(pg_admin_url, world.template_url, f"pipeline_test_labeling_{uuid.uuid4().hex[:12]}")
    engine = make_engine(url)
    yield engine
    engine.dispose()
    drop_database(pg_admin_url, url)


@pytest.fixture
def prefix() -> str:
    """A project-title prefix of this test's own on the shared server."""
    return f"test-{uuid.uuid4().hex[:8]}/"


def queue(engine: Engine, n: int, project: ProjectKind = ProjectKind.RELABELING) -> list[str]:
    """Put the first ``n`` scored studies in ``relabel_queue`` (status queued); return their ids."""
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(inference_logs)
            .where(inference_logs.c.status == "ok")
            .order_by(inference_logs.c.study_id)
            .limit(n)
        ).all()
        conn.execute(
            relabel_queue.insert(),
            [
                {
                    "study_id": r.study_id,
                    "site": r.site,
                    "model_version": r.model_version,
                    "project": project.value,
                    "strategy": "uncertain",
                    "reasons": json.dumps({"uncertain": {"entropy": round(float(r.entropy or 0), 3)}}),
                    "priority": float(r.entropy or 0),
                    "prob_abnormal": r.prob_abnormal,
                    "picked_for": NOW.date(),
                    "picked_at": NOW,
                    "status": QueueStatus.QUEUED.value,
                }
                for r in rows
            ],
        )
    assert len(rows) == n
    return [r.study_id for r in rows]


def statuses(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(relabel_queue.c.status, sa.func.count()).group_by(relabel_queue.c.status))
        return {r[0]: r[1] for r in rows}


def label_count(engine: Engine, project: ProjectKind | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(labels)
    if project is not None:
        query = query.where(labels.c.project == project.value)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def all_tasks(client: object, project_id: int) -> list[object]:
    tasks, total = task_page(client, project_id, page_size=1000)  # type: ignore[arg-type]
    assert len(tasks) == total
    return tasks


def test_push_annotate_sync_round_trip(store: Engine, label_studio: LabelStudio, prefix: str) -> None:
    client = make_client(url=label_studio.url, token=label_studio.token, attempts=2, backoff_s=0.1)
    project_id = ensure_project(client, ProjectKind.RELABELING, prefix=prefix, document_root=label_studio.document_root)
    assert ensure_project(client, ProjectKind.RELABELING, prefix=prefix) == project_id
    assert find_project(client, ProjectKind.RELABELING, prefix=prefix) == project_id
    study_ids = queue(store, 50)

    pushed = push_queued(store, client, label_studio.document_root, prefix=prefix, image_size_px=IMAGE_PX, now=NOW)
    assert (pushed.created, pushed.found, pushed.unrenderable) == (50, 0, ())
    assert statuses(store) == {"pushed": 50}
    tasks = all_tasks(client, project_id)
    assert sorted(t.data["study_id"] for t in tasks) == sorted(study_ids)
    with store.connect() as conn:
        queued = {r.study_id: r for r in conn.execute(sa.select(relabel_queue))}
        decisions = {
            r.study_id: r.decision
            for r in conn.execute(sa.select(inference_logs.c.study_id, inference_logs.c.decision))
        }
    for task in tasks:
        row = queued[task.data["study_id"]]
        assert row.task_id == task.id
        assert task.data["site"] == row.site and task.data["model_answer"] == decisions[row.study_id]
        [prediction] = task.predictions
        assert prediction.score == pytest.approx(row.prob_abnormal)
        assert prediction.model_version == row.model_version
        assert prediction.result[0]["value"]["choices"] == [decisions[row.study_id]]
    # The image is served by Label Studio from the document root, and it is a small PNG.
    image = httpx.get(
        label_studio.url + tasks[0].data["image"], headers={"Authorization": f"Token {label_studio.token}"}
    )
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")

    # A push that died after creating tasks but before recording them: the next one finds them.
    with store.begin() as conn:
        conn.execute(
            relabel_queue.update()
            .where(relabel_queue.c.study_id.in_(study_ids[:5]))
            .values(status="queued", task_id=None, pushed_at=None)
        )
    again = push_queued(store, client, label_studio.document_root, prefix=prefix, image_size_px=IMAGE_PX, now=NOW)
    assert (again.created, again.found) == (0, 5)
    assert len(all_tasks(client, project_id)) == 50

    done = bot.annotate(store, client, project_id, error_rate=0.0, seed=1, annotator="bot-a@pipeline.test")
    assert done.annotated == 50
    assert (
        bot.annotate(store, client, project_id, error_rate=0.0, seed=1, annotator="bot-a@pipeline.test").annotated == 0
    )

    synced = sync_annotations(store, client, now=NOW, prefix=prefix, page_size=20, new_labels_threshold=50)
    assert (synced.new, synced.updated, synced.new_labels_ready, synced.pending) == (50, 0, True, 50)
    assert label_count(store) == 50
    assert statuses(store) == {"labeled": 50}
    resynced = sync_annotations(store, client, now=NOW, prefix=prefix, page_size=20, new_labels_threshold=50)
    assert (resynced.new, resynced.updated, resynced.new_labels_ready) == (0, 0, False)
    assert label_count(store) == 50
    assert push_queued(store, client, label_studio.document_root, prefix=prefix).pushed == 0
    with store.connect() as conn:
        annotators = set(conn.execute(sa.select(labels.c.annotator).distinct()).scalars())
        truth = dict(conn.execute(sa.text("SELECT study_id, abnormal FROM ground_truth")).all())
        stored = dict(conn.execute(sa.select(labels.c.study_id, labels.c.abnormal)).all())
    assert annotators == {"bot-a@pipeline.test"}
    assert all(stored[s] == truth[s] for s in stored)  # error rate 0: the truth

    # A second, noisy annotator: agreement drops, and the disagreements go to adjudication, once.
    noisy = bot.annotate(store, client, project_id, error_rate=0.3, seed=7, annotator="bot-b@pipeline.test")
    assert noisy.annotated == 50 and noisy.flipped > 0
    synced = sync_annotations(store, client, now=NOW, prefix=prefix)
    relabeling = next(p for p in synced.projects if p.project == "relabeling")
    assert synced.new == 50 and relabeling.agreement.statistic == "cohen_kappa"
    assert relabeling.agreement.disagreements == noisy.flipped
    assert relabeling.agreement.value is not None and relabeling.agreement.value < 1.0
    assert len(synced.sent_to_adjudication) == noisy.flipped
    assert statuses(store).get("adjudication") == noisy.flipped
    assert sync_annotations(store, client, now=NOW, prefix=prefix).sent_to_adjudication == ()
    adjudication_id = find_project(client, ProjectKind.ADJUDICATION, prefix=prefix)
    assert adjudication_id is not None
    adjudication_tasks = all_tasks(client, adjudication_id)
    assert sorted(t.data["study_id"] for t in adjudication_tasks) == sorted(synced.sent_to_adjudication)

    # The adjudicator settles them; the study is labeled, and is not sent again.
    bot.annotate(store, client, adjudication_id, error_rate=0.0, seed=3, annotator="adjudicator@pipeline.test")
    final = sync_annotations(store, client, now=NOW, prefix=prefix)
    assert final.sent_to_adjudication == ()
    assert label_count(store, ProjectKind.ADJUDICATION) == noisy.flipped
    assert statuses(store) == {"labeled": 50}


def _strings(value: object) -> str:
    return json.dumps(value, default=str)


class _CreateAnsweredLate:
    """The projects client of a server that made a project but answered with an error, so the client asked again
    (Label Studio on SQLite under load: "database is locked"): each create makes two."""

    def __init__(self, projects: Any) -> None:
        self._projects = projects

    def create(self, **kwargs: Any) -> Any:
        self._projects.create(**kwargs)
        return self._projects.create(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._projects, name)


def test_a_project_made_twice_is_kept_once(label_studio: LabelStudio, prefix: str) -> None:
    client = make_client(url=label_studio.url, token=label_studio.token, attempts=2, backoff_s=0.1)
    retrying = SimpleNamespace(projects=_CreateAnsweredLate(client.projects))
    project_id = ensure_project(retrying, ProjectKind.ADJUDICATION, prefix=prefix)  # type: ignore[arg-type]
    title = f"{prefix}{ProjectKind.ADJUDICATION.value}"
    kept = [p.id for p in client.projects.list(title=title, page_size=100) if p.title == title]
    assert kept == [project_id]
    assert ensure_project(client, ProjectKind.ADJUDICATION, prefix=prefix) == project_id


def test_no_phi_reaches_label_studio(store: Engine, label_studio: LabelStudio, prefix: str) -> None:
    client = make_client(url=label_studio.url, token=label_studio.token, attempts=2, backoff_s=0.1)
    study_ids = queue(store, 12, ProjectKind.CLINICAL_QA)
    push_queued(store, client, label_studio.document_root, prefix=prefix, image_size_px=IMAGE_PX, now=NOW)
    with store.connect() as conn:
        uris = conn.execute(sa.text("SELECT dicom_uri FROM studies WHERE study_id = ANY(:ids)"), {"ids": study_ids})
        datasets = [pydicom.dcmread(u, stop_before_pixels=True) for u in uris.scalars()]
    phi = set()
    for ds in datasets:
        phi |= {str(ds.get(tag)) for tag in PHI_TAGS if ds.get(tag) not in (None, "")}
        phi.add(str(ds.SOPInstanceUID))
    phi = {p for p in phi if len(p) >= 6}
    assert len(phi) >= 4 * len(datasets), phi  # the synthetic files do carry identifiers

    project_id = find_project(client, ProjectKind.CLINICAL_QA, prefix=prefix)
    assert project_id is not None
    tasks = all_tasks(client, project_id)
    assert len(tasks) == 12
    exposed = _strings([t.model_dump(mode="json", warnings=False) for t in tasks])
    folder = project_folder(label_studio.document_root, ProjectKind.CLINICAL_QA, prefix=prefix)
    pngs = sorted(folder.glob("*"))
    assert sorted(p.name for p in pngs) == sorted(f"{s}.png" for s in study_ids)
    for png in pngs:
        with Image.open(png) as image:
            assert image.format == "PNG" and max(image.size) == IMAGE_PX
            assert not image.info.get("text") and not getattr(image, "text", {}), image.info
            exposed += _strings(image.info)
        exposed += png.read_bytes().decode("latin-1")
    # Everything the server stores: its SQLite database (and write-ahead log).
    db = label_studio.document_root.parent / "data" / "label_studio.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(FULL)")
    for path in db.parent.glob("label_studio.sqlite3*"):
        exposed += path.read_bytes().decode("latin-1")
    leaked = sorted(p for p in phi if p in exposed)
    assert leaked == []
    assert all(s in exposed for s in study_ids)  # the search does see what was pushed


def test_label_studio_down_fails_clearly_and_writes_nothing(store: Engine, label_studio: LabelStudio) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = make_client(url=url, token=label_studio.token, attempts=3, backoff_s=0.05)
    queue(store, 5)
    with pytest.raises(LabelStudioUnavailable) as pushed:
        push_queued(store, client, label_studio.document_root, prefix="down/", image_size_px=IMAGE_PX, now=NOW)
    message = str(pushed.value)
    assert url in message and "3 tries" in message and label_studio.token not in message
    assert statuses(store) == {"queued": 5}
    with pytest.raises(LabelStudioUnavailable, match=url):
        sync_annotations(store, client, now=NOW, prefix="down/")
    assert label_count(store) == 0


def _restart(process: ManagedProcess, server: LabelStudio) -> ManagedProcess:
    """Start Label Studio again with the same command line, data directory and port."""
    data_dir = Path(process.argv[process.argv.index("--data-dir") + 1])
    restarted = start_process(
        "label-studio",
        process.argv,
        log_path=process.log_path.with_name("label-studio-restarted.log"),
        env=_child_env(
            data_dir, server.document_root, server.url, LabelStudioAdmin(server.username, server.password, server.token)
        ),
        cwd=process.log_path.parent,
    )
    restarted.wait_for_http(
        f"{server.url}/api/projects?page_size=1", headers={"Authorization": f"Token {server.token}"}, timeout=300
    )
    return restarted


def test_restart_during_sync_loses_and_duplicates_nothing(
    store: Engine, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    cache = request.config.cache.mkdir("label-studio") if request.config.cache is not None else None
    server, process = start_label_studio(tmp_path / "ls", admin=TEST_LABEL_STUDIO_ADMIN, cache_dir=cache)
    try:
        client = make_client(url=server.url, token=server.token, attempts=2, backoff_s=0.1)
        queue(store, 30)
        push_queued(store, client, server.document_root, prefix="restart/", image_size_px=IMAGE_PX, now=NOW)
        project_id = find_project(client, ProjectKind.RELABELING, prefix="restart/")
        assert project_id is not None
        bot.annotate(store, client, project_id, error_rate=0.0, seed=1)

        pages = []

        def stop_after_first_page(page: object) -> None:
            pages.append(page)
            process.stop()

        with pytest.raises(LabelStudioUnavailable):
            sync_annotations(store, client, now=NOW, prefix="restart/", page_size=10, on_page=stop_after_first_page)
        assert len(pages) == 1 and label_count(store) == 10

        process = _restart(process, server)
        synced = sync_annotations(store, client, now=NOW, prefix="restart/", page_size=10)
        assert synced.new == 20
        assert label_count(store) == 30
        with store.connect() as conn:
            assert conn.execute(sa.select(sa.func.count(sa.distinct(labels.c.study_id)))).scalar_one() == 30
        assert statuses(store) == {"labeled": 30}
        assert sync_annotations(store, client, now=NOW, prefix="restart/").new == 0
        assert len(all_tasks(client, project_id)) == 30
    finally:
        process.stop()
