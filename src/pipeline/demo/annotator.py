"""An annotator bot for demos and tests: it answers open tasks from the simulator's ground truth, with noise.

Each bot is a Label Studio user of its own (created through the API by the admin token), and its annotations are
recorded as ``completed_by`` that user, so several bots on one project are several annotators to Label Studio
and to the agreement statistics. Its answers are deterministic per (seed, study): running it again, or on
another server, gives the same labels, and a task it already annotated is left alone.
"""

from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from label_studio_sdk import LabelStudio
from sqlalchemy.engine import Engine

from pipeline.labeling.interface import ABNORMAL, FINDING_VALUES, FINDINGS, IMAGE_KEY, NORMAL, VERDICT
from pipeline.labeling.tasks import task_page
from pipeline.store.schema import ground_truth

log = logging.getLogger(__name__)

DEFAULT_ANNOTATOR = "bot-1@pipeline.local"
_PAGE_SIZE = 100


@dataclass(frozen=True)
class BotResult:
    """What the bot did on one project.

    Args:
        annotator: the bot's e-mail (its Label Studio user).
        annotated: tasks annotated now.
        flipped: of them, answers deliberately wrong (label noise).
        already_done: tasks the bot had annotated before.
        no_truth: tasks whose study has no ground truth (left open).
    """

    annotator: str
    annotated: int
    flipped: int
    already_done: int
    no_truth: int


def ensure_user(client: LabelStudio, email: str) -> int:
    """Return the id of the Label Studio user with ``email``, creating the user (no password) if needed.

    Raises:
        label_studio_sdk.core.api_error.ApiError: the token may not create users (it needs organisation admin
            rights).
    """
    for user in client.users.list():
        if user.email == email and user.id is not None:
            return user.id
    created = client.users.create(username=email.split("@", 1)[0], email=email, first_name="annotator bot")
    if created.id is None:
        raise RuntimeError(f"Label Studio created user {email!r} without an id")
    return created.id


def bot_answer(abnormal: bool, findings: str, *, error_rate: float, seed: int, study_id: str) -> tuple[bool, list[str]]:
    """Return the bot's (abnormal, findings) for a study whose truth is ``abnormal``/``findings``.

    With probability ``error_rate`` (drawn from a generator seeded by ``seed`` and the study id) the verdict is
    flipped: a normal study called abnormal gets the finding ``other``, an abnormal one called normal none.
    Findings the labeling config does not know become ``other``.
    """
    if not 0 <= error_rate <= 1:
        raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
    rng = np.random.default_rng([seed, zlib.crc32(study_id.encode())])
    flip = bool(rng.random() < error_rate)
    answer = abnormal != flip
    if not answer:
        return False, []
    names = [f if f in FINDING_VALUES else "other" for f in findings.split(",") if f] if abnormal else []
    return True, sorted(set(names or ["other"]), key=FINDING_VALUES.index)


def _result(abnormal: bool, findings: list[str]) -> list[dict[str, Any]]:
    regions: list[dict[str, Any]] = [
        {
            "from_name": VERDICT,
            "to_name": IMAGE_KEY,
            "type": "choices",
            "value": {"choices": [ABNORMAL if abnormal else NORMAL]},
        }
    ]
    if findings:
        regions.append({"from_name": FINDINGS, "to_name": IMAGE_KEY, "type": "choices", "value": {"choices": findings}})
    return regions


def _user_id(completed_by: object) -> int | None:
    if isinstance(completed_by, dict):
        completed_by = completed_by.get("id")
    return completed_by if isinstance(completed_by, int) else None


def _all_tasks(client: LabelStudio, project_id: int) -> list[Any]:
    tasks, total = task_page(client, project_id, page_size=_PAGE_SIZE)
    for page in range(2, math.ceil(total / _PAGE_SIZE) + 1):
        tasks.extend(task_page(client, project_id, page_size=_PAGE_SIZE, page=page)[0])
    return tasks


def annotate(
    engine: Engine,
    client: LabelStudio,
    project_id: int,
    *,
    error_rate: float,
    seed: int,
    annotator: str = DEFAULT_ANNOTATOR,
    limit: int | None = None,
) -> BotResult:
    """Annotate every task of ``project_id`` that ``annotator`` has not annotated yet, from the ground truth.

    Args:
        engine: the store (its ``ground_truth`` table is the simulator's truth).
        client: a Label Studio client whose token may create users.
        project_id: the Label Studio project.
        error_rate: share of deliberately wrong verdicts (label noise), in [0, 1].
        seed: seed of the noise; with the study id it fixes each answer.
        annotator: the bot's e-mail; each distinct one is a distinct Label Studio user.
        limit: annotate at most this many tasks.
    """
    user_id = ensure_user(client, annotator)
    tasks = _all_tasks(client, project_id)
    study_ids = {str((t.data or {}).get("study_id")) for t in tasks}
    with engine.connect() as conn:
        truth = {
            r.study_id: (bool(r.abnormal), r.findings)
            for r in conn.execute(
                sa.select(ground_truth.c.study_id, ground_truth.c.abnormal, ground_truth.c.findings).where(
                    ground_truth.c.study_id.in_(list(study_ids))
                )
            )
        }
    annotated = flipped = already = missing = 0
    for task in sorted(tasks, key=lambda t: t.id):
        if limit is not None and annotated >= limit:
            break
        if any(_user_id(dict(a).get("completed_by")) == user_id for a in task.annotations or []):
            already += 1
            continue
        study_id = str((task.data or {}).get("study_id"))
        if study_id not in truth:
            missing += 1
            continue
        abnormal, findings = truth[study_id]
        answer, names = bot_answer(abnormal, findings, error_rate=error_rate, seed=seed, study_id=study_id)
        client.annotations.create(id=task.id, result=_result(answer, names), completed_by=user_id)
        annotated += 1
        flipped += answer != abnormal
    log.info("bot %s annotated %d tasks of project %d (%d flipped)", annotator, annotated, project_id, flipped)
    return BotResult(annotator, annotated, flipped, already, missing)
