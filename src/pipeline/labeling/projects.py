"""Find or create the Label Studio projects the pipeline owns, by title, so a re-run never makes a second one."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from label_studio_sdk import LabelStudio

from pipeline.labeling.interface import DEFAULT_PREFIX, LABEL_CONFIG, PROJECTS, ProjectKind, project_title

log = logging.getLogger(__name__)


def find_project(client: LabelStudio, kind: ProjectKind | str, *, prefix: str = DEFAULT_PREFIX) -> int | None:
    """Return the id of the project of ``kind`` (by its exact title), or None when there is none.

    Were there ever two (two runs racing to create it), the oldest wins and a warning names both.
    """
    title = project_title(kind, prefix)
    ids = _project_ids(client, title)
    if len(ids) > 1:
        log.warning("%d Label Studio projects titled %r (%s): using %d", len(ids), title, ids, ids[0])
    return ids[0] if ids else None


def _project_ids(client: LabelStudio, title: str) -> list[int]:
    """Ids of the projects titled exactly ``title``, oldest first."""
    projects: list[Any] = list(client.projects.list(title=title, page_size=100))
    return sorted(p.id for p in projects if p.title == title and p.id is not None)


def project_folder(document_root: Path, kind: ProjectKind | str, *, prefix: str = DEFAULT_PREFIX) -> Path:
    """Return the folder under ``document_root`` that holds the PNGs of the project of ``kind``."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", project_title(kind, prefix)).strip("-")
    return document_root / slug


def ensure_project(
    client: LabelStudio,
    kind: ProjectKind | str,
    *,
    prefix: str = DEFAULT_PREFIX,
    document_root: Path | None = None,
) -> int:
    """Return the id of the project of ``kind``, creating and configuring it when it does not exist yet.

    The project is found again by its title (``<prefix><kind>``). Its labeling config and instructions are
    set on every call, so a changed config reaches an existing project.

    Args:
        client: a Label Studio client (:func:`pipeline.labeling.make_client`).
        kind: which project.
        prefix: project-title prefix (``PIPELINE_LABEL_STUDIO_PROJECT_PREFIX``).
        document_root: Label Studio's local-files document root; when given, the project gets a local-files
            storage over its PNG folder (:func:`project_folder`), without which the server refuses to serve them.
    """
    kind = ProjectKind(kind)
    spec = PROJECTS[kind]
    title = project_title(kind, prefix)
    project_id = find_project(client, kind, prefix=prefix)
    if project_id is None:
        created = client.projects.create(
            title=title,
            label_config=LABEL_CONFIG,
            description=spec.description,
            expert_instruction=spec.instruction,
            show_instruction=spec.show_instruction,
        )
        if created.id is None:
            raise RuntimeError(f"Label Studio created project {title!r} without an id")
        # Another run may have created it at the same time, or the client retried a create that the server had
        # done but answered with an error (Label Studio on SQLite under load: "database is locked"). The oldest
        # project wins; the one made here, still empty, goes.
        project_id = min(_project_ids(client, title), default=created.id)
        if project_id != created.id:
            client.projects.delete(id=created.id)
            log.info("Label Studio project %r already existed (id %d): dropped the copy made here", title, project_id)
        else:
            log.info("created Label Studio project %r (id %d)", title, project_id)
    else:
        current = client.projects.get(id=project_id)
        if current.label_config != LABEL_CONFIG or current.expert_instruction != spec.instruction:
            client.projects.update(
                id=project_id,
                label_config=LABEL_CONFIG,
                description=spec.description,
                expert_instruction=spec.instruction,
                show_instruction=spec.show_instruction,
            )
    if document_root is not None:
        _ensure_local_storage(client, project_id, project_folder(document_root, kind, prefix=prefix))
    return project_id


def _ensure_local_storage(client: LabelStudio, project_id: int, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = str(folder.resolve())
    existing = client.import_storage.local.list(project=project_id)
    if any(s.path is not None and Path(s.path) == Path(path) for s in existing):
        return
    # Never synced: the storage only allows the server to serve this folder; tasks are created by the pipeline.
    client.import_storage.local.create(
        project=project_id, path=path, title="pipeline renderings", use_blob_urls=True, regex_filter=r"^$"
    )
