"""A real Label Studio server driven through label-studio-sdk 2: projects, tasks and local files round-trip."""

from __future__ import annotations

import uuid

import httpx
import pytest
from label_studio_sdk import LabelStudio as LabelStudioClient
from label_studio_sdk.core.api_error import ApiError

from pipeline.demo.stack.label_studio import LabelStudio

pytestmark = pytest.mark.integration

LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="finding" toName="image" choice="single">
    <Choice value="normal"/>
    <Choice value="abnormal"/>
  </Choices>
</View>"""


def test_project_and_tasks_round_trip(label_studio: LabelStudio) -> None:
    client = LabelStudioClient(base_url=label_studio.url, api_key=label_studio.token)
    title = f"smoke-{uuid.uuid4().hex[:8]}"
    created = client.projects.create(title=title, label_config=LABEL_CONFIG)
    assert created.id is not None

    project = client.projects.get(id=created.id)
    assert project.title == title
    assert project.label_config is not None
    assert 'name="finding"' in project.label_config
    assert 'value="$image"' in project.label_config

    client.projects.import_tasks(
        id=created.id,
        request=[
            {"image": "/data/local-files/?d=study-1.png", "study_id": "s1"},
            {"image": "/data/local-files/?d=study-2.png", "study_id": "s2"},
        ],
    )
    tasks = list(client.tasks.list(project=created.id))
    assert sorted(task.data["study_id"] for task in tasks) == ["s1", "s2"]
    assert all(task.data["image"].startswith("/data/local-files/") for task in tasks)


def test_token_is_required(label_studio: LabelStudio) -> None:
    client = LabelStudioClient(base_url=label_studio.url, api_key="not-the-token")
    with pytest.raises(ApiError) as excinfo:
        client.projects.get(id=1)
    assert excinfo.value.status_code == 401


def test_local_files_under_document_root_are_served(label_studio: LabelStudio) -> None:
    client = LabelStudioClient(base_url=label_studio.url, api_key=label_studio.token)
    project = client.projects.create(title=f"local-files-{uuid.uuid4().hex[:8]}", label_config=LABEL_CONFIG)
    folder = label_studio.document_root / f"project-{project.id}"
    folder.mkdir()
    payload = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
    (folder / "study-1.png").write_bytes(payload)

    storage = client.import_storage.local.create(
        project=project.id, path=str(folder), regex_filter=r".*\.png", use_blob_urls=True
    )
    client.import_storage.local.sync(id=storage.id)
    tasks = list(client.tasks.list(project=project.id))
    assert len(tasks) == 1
    # The storage fills the config's only data key, with an absolute URL because the server knows its --host.
    url = tasks[0].data["image"]
    assert url == f"{label_studio.url}/data/local-files/?d=project-{project.id}/study-1.png"

    response = httpx.get(url, headers={"Authorization": f"Token {label_studio.token}"})
    assert response.status_code == 200
    assert response.content == payload
