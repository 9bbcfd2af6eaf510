"""Turn a Label Studio annotation into the row the ``labels`` table keeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.labeling.interface import (
    ABNORMAL,
    BOXES,
    FINDING_VALUES,
    FINDINGS,
    NORMAL,
    UNUSABLE,
    UNUSABLE_CHOICE,
    UNUSABLE_REASONS,
    VERDICT,
)


class IncompleteAnnotation(ValueError):
    """An annotation that says neither normal, abnormal nor unusable: it is no label."""


@dataclass(frozen=True)
class ParsedResult:
    """What one annotator said about one image.

    Args:
        abnormal: True/False, None when the image was marked unusable.
        findings: sorted finding names (``FINDING_VALUES``), from the findings choices and the boxes; empty
            unless abnormal.
        unusable: the image cannot be judged.
        unusable_reasons: sorted reason names, spaces as underscores (``wrong_body_part``).
    """

    abnormal: bool | None
    findings: tuple[str, ...]
    unusable: bool
    unusable_reasons: tuple[str, ...]


@dataclass(frozen=True)
class LabelRow:
    """One row of the ``labels`` table (one Label Studio annotation)."""

    annotation_id: int
    task_id: int
    project: str
    study_id: str
    annotator: str
    abnormal: bool | None
    findings: str
    unusable: bool
    unusable_reasons: str
    created_at: datetime
    updated_at: datetime
    synced_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """Return the row as column -> value."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _values(result: Sequence[Mapping[str, Any]], from_name: str, key: str) -> list[str]:
    found: list[str] = []
    for region in result:
        if region.get("from_name") == from_name:
            found.extend(str(v) for v in (region.get("value") or {}).get(key) or [])
    return found


def _slug(value: str) -> str:
    return value.strip().lower().replace(" ", "_")


def parse_result(result: Sequence[Mapping[str, Any]]) -> ParsedResult:
    """Return what an annotation's ``result`` (Label Studio's list of regions) says.

    "Image unusable" wins over a verdict given as well. Findings outside ``FINDING_VALUES`` are kept under
    their own name rather than dropped, so a config change does not silently lose labels.

    Raises:
        IncompleteAnnotation: neither a verdict nor "image unusable" was given.
    """
    verdicts = _values(result, VERDICT, "choices")
    unusable = UNUSABLE_CHOICE in _values(result, UNUSABLE, "choices")
    if unusable:
        reasons = sorted({_slug(r) for r in _values(result, UNUSABLE_REASONS, "choices")})
        return ParsedResult(abnormal=None, findings=(), unusable=True, unusable_reasons=tuple(reasons))
    if ABNORMAL in verdicts:
        named = _values(result, FINDINGS, "choices") + _values(result, BOXES, "rectanglelabels")
        order = {name: i for i, name in enumerate(FINDING_VALUES)}
        findings = sorted({_slug(f) for f in named}, key=lambda f: (order.get(f, len(order)), f))
        return ParsedResult(abnormal=True, findings=tuple(findings), unusable=False, unusable_reasons=())
    if NORMAL in verdicts:
        return ParsedResult(abnormal=False, findings=(), unusable=False, unusable_reasons=())
    raise IncompleteAnnotation("the annotation gives no verdict (normal/abnormal) and does not mark the image unusable")


def label_row(
    annotation: Mapping[str, Any], *, task_id: int, project: str, study_id: str, synced_at: datetime
) -> LabelRow:
    """Return the ``labels`` row of one annotation as the tasks API returns it (``fields=all``).

    Args:
        annotation: the annotation object: ``id``, ``result``, ``completed_by`` (a user object with ``email``,
            or a user id), ``created_at``, ``updated_at`` (ISO 8601 strings or datetimes).
        task_id: the Label Studio task id.
        project: the project kind (``relabeling``, ...).
        study_id: the pseudonymous study id from the task data.
        synced_at: when this sync ran (UTC).

    Raises:
        IncompleteAnnotation: the annotation carries no label (see :func:`parse_result`).
    """
    parsed = parse_result(annotation.get("result") or [])
    return LabelRow(
        annotation_id=int(annotation["id"]),
        task_id=task_id,
        project=project,
        study_id=study_id,
        annotator=annotator_name(annotation.get("completed_by")),
        abnormal=parsed.abnormal,
        findings=",".join(parsed.findings),
        unusable=parsed.unusable,
        unusable_reasons=",".join(parsed.unusable_reasons),
        created_at=_datetime(annotation["created_at"]),
        updated_at=_datetime(annotation["updated_at"]),
        synced_at=synced_at,
    )


def annotator_name(completed_by: object) -> str:
    """Return who annotated: the user's e-mail, else ``user-<id>``, else ``unknown``."""
    if isinstance(completed_by, Mapping):
        if completed_by.get("email"):
            return str(completed_by["email"])
        if completed_by.get("id") is not None:
            return f"user-{completed_by['id']}"
    if isinstance(completed_by, int):
        return f"user-{completed_by}"
    return "unknown"


def _datetime(value: object) -> datetime:
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without time zone from Label Studio: {value!r}")
    return parsed


__all__ = [
    "IncompleteAnnotation",
    "LabelRow",
    "ParsedResult",
    "annotator_name",
    "label_row",
    "parse_result",
]
