"""A label-studio-sdk client that rides out short outages and fails clearly on long ones.

Transient failures (the server restarting, a proxy answering 502/503) are retried with exponential
backoff inside the HTTP transport, below the SDK; when the tries are used up, the request fails with
:class:`LabelStudioUnavailable`, naming the server and the request, never the token. A request that is
not idempotent (POST, PATCH) is retried only when it surely did not reach the server (no connection, or a
502/503 from in front of it): the callers find what an uncertain POST created by our own ids instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import httpx
from label_studio_sdk import LabelStudio

log = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUS_IDEMPOTENT = frozenset({500, 502, 503, 504})
RETRY_STATUS_ANY = frozenset({502, 503})
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_ATTEMPTS = 4
DEFAULT_BACKOFF_S = 1.0


class LabelStudioUnavailable(RuntimeError):
    """Label Studio did not answer (or kept answering 5xx) after every try; the message names server and request."""

    def __init__(self, url: str, what: str, attempts: int, cause: str) -> None:
        self.url = url
        self.what = what
        self.attempts = attempts
        self.cause = cause
        super().__init__(
            f"Label Studio at {url} is unavailable: {what} failed after {attempts} tries ({cause}). "
            "Check that the server is running and PIPELINE_LABEL_STUDIO_URL points at it."
        )


class RetryTransport(httpx.BaseTransport):
    """An httpx transport that retries transient failures and raises :class:`LabelStudioUnavailable` after them.

    Args:
        server_url: the server's base URL, for the error message.
        attempts: tries per request (1 = no retry).
        backoff_s: wait before the second try; doubles after each further failure.
        inner: the transport doing the work (default: a plain ``httpx.HTTPTransport``).
        sleep: how to wait (seconds).
    """

    def __init__(
        self,
        server_url: str,
        *,
        attempts: int = 4,
        backoff_s: float = 1.0,
        inner: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        self.server_url = server_url
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.inner = inner or httpx.HTTPTransport()
        self.sleep = sleep

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``, retrying transient failures; raise :class:`LabelStudioUnavailable` when they persist."""
        idempotent = request.method in IDEMPOTENT_METHODS
        retry_status = RETRY_STATUS_IDEMPOTENT if idempotent else RETRY_STATUS_ANY
        what = f"{request.method} {request.url.path}"
        cause = ""
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.inner.handle_request(request)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                cause = f"cannot connect: {type(exc).__name__}: {exc}"
            except httpx.TransportError as exc:
                cause = f"{type(exc).__name__}: {exc}"
                if not idempotent:  # it may have reached the server: retrying could do it twice
                    raise LabelStudioUnavailable(self.server_url, what, attempt, cause) from exc
            else:
                if response.status_code not in retry_status:
                    return response
                response.read()
                response.close()
                cause = f"HTTP {response.status_code}"
            if attempt < self.attempts:
                delay = self.backoff_s * 2 ** (attempt - 1)
                log.warning(
                    "Label Studio %s: %s failed (%s); try %d of %d in %.1f s",
                    self.server_url,
                    what,
                    cause,
                    attempt + 1,
                    self.attempts,
                    delay,
                )
                self.sleep(delay)
        raise LabelStudioUnavailable(self.server_url, what, self.attempts, cause)

    def close(self) -> None:
        """Close the inner transport."""
        self.inner.close()


def make_client(
    *,
    url: str,
    token: str | None,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff_s: float = DEFAULT_BACKOFF_S,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> LabelStudio:
    """Return a label-studio-sdk 2.x client for the configured server, retrying transient failures.

    Args:
        url: the server (``PIPELINE_LABEL_STUDIO_URL``).
        token: a legacy API token or a personal access token (``PIPELINE_LABEL_STUDIO_TOKEN``).
        attempts: tries per request on connection errors and 5xx answers.
        backoff_s: first wait between tries in seconds; it doubles after each failed try.
        timeout_s: read timeout of one request in seconds.

    Raises:
        ValueError: no token is configured.
    """
    base_url, secret = url.rstrip("/"), token
    if not secret:
        raise ValueError("no Label Studio API token: set PIPELINE_LABEL_STUDIO_TOKEN")
    transport = RetryTransport(
        base_url,
        attempts=attempts,
        backoff_s=backoff_s,
    )
    http = httpx.Client(transport=transport, timeout=timeout_s, follow_redirects=True)
    return LabelStudio(base_url=base_url, api_key=secret, httpx_client=http)
