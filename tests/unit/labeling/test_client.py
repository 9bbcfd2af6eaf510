"""The retrying transport against a port where nothing listens: it retries with backoff, then fails clearly."""

from __future__ import annotations

import httpx
import pytest

from pipeline.demo.stack.ports import free_port
from pipeline.labeling import LabelStudioUnavailable, RetryTransport, make_client


def test_retries_then_names_server_and_request() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    waits: list[float] = []
    client = httpx.Client(transport=RetryTransport(url, attempts=3, backoff_s=0.5, sleep=waits.append))
    with pytest.raises(LabelStudioUnavailable) as failure:
        client.get(f"{url}/api/projects")
    assert waits == [0.5, 1.0]
    assert f"Label Studio at {url}" in str(failure.value) and "GET /api/projects" in str(failure.value)


def test_client_never_shows_the_token() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = make_client(url=url, token="secret-token-123", attempts=1)
    with pytest.raises(LabelStudioUnavailable) as failure:
        client.projects.list()
    assert "secret-token-123" not in str(failure.value)
    assert "secret-token-123" not in repr(failure.value)


def test_a_token_is_required() -> None:
    with pytest.raises(ValueError, match="PIPELINE_LABEL_STUDIO_TOKEN"):
        make_client(url="http://127.0.0.1:1", token="")
