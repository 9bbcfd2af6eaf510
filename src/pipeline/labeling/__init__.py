"""The Label Studio side of the relabeling loop: projects, tasks with pre-annotations, annotation sync, agreement.

``push_queued`` turns ``relabel_queue`` rows into tasks (rendered PNG, the model's answer pre-filled, no PHI);
``sync_annotations`` pulls finished annotations into ``labels``, measures agreement and sends disagreements to
the ``adjudication`` project (``pipeline.demo.annotator`` stands in for annotators in demos and tests).
"""

from __future__ import annotations

from pipeline.labeling.agreement import AgreementResult, agreement, cohen_kappa, fleiss_kappa
from pipeline.labeling.client import LabelStudioUnavailable, RetryTransport, make_client
from pipeline.labeling.interface import LABEL_CONFIG, PROJECTS, ProjectKind, ProjectSpec, project_title
from pipeline.labeling.parse import IncompleteAnnotation, LabelRow, ParsedResult, label_row, parse_result
from pipeline.labeling.projects import ensure_project, find_project, project_folder
from pipeline.labeling.sync import (
    PageResult,
    ProjectSync,
    SyncResult,
    disagreements,
    project_agreement,
    send_to_adjudication,
    sync_annotations,
)
from pipeline.labeling.tasks import PushResult, find_tasks, image_url, push_queued, render_study, task_payload

__all__ = [
    "LABEL_CONFIG",
    "PROJECTS",
    "AgreementResult",
    "IncompleteAnnotation",
    "LabelRow",
    "LabelStudioUnavailable",
    "PageResult",
    "ParsedResult",
    "ProjectKind",
    "ProjectSpec",
    "ProjectSync",
    "PushResult",
    "RetryTransport",
    "SyncResult",
    "agreement",
    "cohen_kappa",
    "disagreements",
    "ensure_project",
    "find_project",
    "find_tasks",
    "fleiss_kappa",
    "image_url",
    "label_row",
    "make_client",
    "parse_result",
    "project_agreement",
    "project_folder",
    "project_title",
    "push_queued",
    "render_study",
    "send_to_adjudication",
    "sync_annotations",
    "task_payload",
]
