"""What annotators see: the Label Studio projects the pipeline owns and their labeling interface.

One labeling config serves every project, so a label means the same wherever it was given; the projects
differ in their instructions and in which studies they receive:

- ``relabeling``: studies the model was uncertain about, or from a drifting site;
- ``error_review``: studies where the radiologist's report overturned the model;
- ``clinical_qa``: the random control sample (filter by ``site`` and ``model_answer`` in the data manager);
- ``adjudication``: studies whose annotators disagree on normal versus abnormal; its label wins.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

IMAGE_KEY = "image"
"""Task data key of the PNG URL (the config's ``$image``)."""


class ProjectKind(enum.StrEnum):
    """A Label Studio project the pipeline owns; ``relabel_queue.project`` holds the first three."""

    RELABELING = "relabeling"
    ERROR_REVIEW = "error_review"
    CLINICAL_QA = "clinical_qa"
    ADJUDICATION = "adjudication"


# Control names in the labeling config; results are parsed by these (pipeline.labeling.parse).
VERDICT = "verdict"
FINDINGS = "findings"
BOXES = "boxes"
UNUSABLE = "unusable"
UNUSABLE_REASONS = "unusable_reasons"

NORMAL = "normal"
ABNORMAL = "abnormal"
UNUSABLE_CHOICE = "image unusable"
FINDING_VALUES: tuple[str, ...] = ("nodule", "pneumothorax", "effusion", "other")
UNUSABLE_REASON_VALUES: tuple[str, ...] = ("positioning", "artefact", "wrong body part", "exposure", "other")

_BOX_COLOURS = {"nodule": "#e6194b", "pneumothorax": "#3cb44b", "effusion": "#4363d8", "other": "#f58231"}


def _choices(values: tuple[str, ...]) -> str:
    return "\n".join(f'      <Choice value="{v}"/>' for v in values)


LABEL_CONFIG = f"""<View>
  <Image name="{IMAGE_KEY}" value="${IMAGE_KEY}" zoom="true" zoomControl="true" brightnessControl="true"
         contrastControl="true"/>
  <Header value="Is this chest radiograph normal?"/>
  <Choices name="{VERDICT}" toName="{IMAGE_KEY}" choice="single-radio" showInline="true">
    <Choice value="{NORMAL}"/>
    <Choice value="{ABNORMAL}"/>
  </Choices>
  <View visibleWhen="choice-selected" whenTagName="{VERDICT}" whenChoiceValue="{ABNORMAL}">
    <Header value="Findings (all that apply)"/>
    <Choices name="{FINDINGS}" toName="{IMAGE_KEY}" choice="multiple" showInline="true">
{_choices(FINDING_VALUES)}
    </Choices>
    <Header value="Optional: draw a box around each finding"/>
    <RectangleLabels name="{BOXES}" toName="{IMAGE_KEY}">
{chr(10).join(f'      <Label value="{v}" background="{_BOX_COLOURS[v]}"/>' for v in FINDING_VALUES)}
    </RectangleLabels>
  </View>
  <Choices name="{UNUSABLE}" toName="{IMAGE_KEY}" choice="multiple" showInline="true">
    <Choice value="{UNUSABLE_CHOICE}"/>
  </Choices>
  <View visibleWhen="choice-selected" whenTagName="{UNUSABLE}" whenChoiceValue="{UNUSABLE_CHOICE}">
    <Header value="Why is it unusable?"/>
    <Choices name="{UNUSABLE_REASONS}" toName="{IMAGE_KEY}" choice="multiple" showInline="true">
{_choices(UNUSABLE_REASON_VALUES)}
    </Choices>
  </View>
</View>
"""
"""The labeling config (Label Studio XML) of every project the pipeline owns."""

_COMMON = (
    "<p>Say whether the chest radiograph is <b>normal</b> or <b>abnormal</b>; for an abnormal study tick every "
    "finding you see and, if you can, draw a box around each. If the image cannot be judged (cut-off lungs, "
    "artefacts, wrong body part, poor exposure), tick <b>image unusable</b> and say why instead.</p>"
    "<p>The study id is pseudonymous; no patient data is shown here on purpose.</p>"
)


@dataclass(frozen=True)
class ProjectSpec:
    """How a project presents itself.

    Args:
        kind: the project.
        description: one line in the project list.
        instruction: HTML shown to annotators (Label Studio's ``expert_instruction``).
        show_instruction: show the instruction before each labeling session.
    """

    kind: ProjectKind
    description: str
    instruction: str
    show_instruction: bool = True


PROJECTS: dict[ProjectKind, ProjectSpec] = {
    ProjectKind.RELABELING: ProjectSpec(
        ProjectKind.RELABELING,
        "Studies the normal filter was unsure about, or from a site whose images drift.",
        "<h3>Relabeling</h3><p>The model was unsure about these studies, or they come from a site whose images "
        "look different lately. The pre-filled answer is the model's: check it, do not trust it.</p>" + _COMMON,
    ),
    ProjectKind.ERROR_REVIEW: ProjectSpec(
        ProjectKind.ERROR_REVIEW,
        "Studies where the radiologist's report overturned the normal filter.",
        "<h3>Error review</h3><p>The radiologist's report disagreed with the model on these studies. "
        "The pre-filled answer is the model's (likely wrong) answer; label what you see.</p>" + _COMMON,
    ),
    ProjectKind.CLINICAL_QA: ProjectSpec(
        ProjectKind.CLINICAL_QA,
        "A random sample of everything the normal filter saw: unbiased error estimates per site.",
        "<h3>Clinical QA</h3><p>A random sample of the studies the model saw. Filter by <code>site</code> or "
        "<code>model_answer</code> in the data manager to review one site or one kind of decision.</p>" + _COMMON,
    ),
    ProjectKind.ADJUDICATION: ProjectSpec(
        ProjectKind.ADJUDICATION,
        "Studies whose annotators disagree on normal versus abnormal; the adjudicated label wins.",
        "<h3>Adjudication</h3><p>Annotators disagreed on these studies (their votes are in the task data). "
        "Your label is final.</p>" + _COMMON,
    ),
}
"""Every project the pipeline owns, by kind."""


#: Prefix of the project titles the pipeline owns (``PIPELINE_LABEL_STUDIO_PROJECT_PREFIX``).
DEFAULT_PREFIX = "pipeline/"
#: Longest side of the renderings annotators see, in pixels (``PIPELINE_LABEL_STUDIO_IMAGE_SIZE_PX``).
DEFAULT_IMAGE_SIZE_PX = 1024


def project_title(kind: ProjectKind | str, prefix: str) -> str:
    """Return the title of the project of ``kind``: ``<prefix><kind>``, how a later run finds it again."""
    return f"{prefix}{ProjectKind(kind).value}"
