"""Who may read the monitoring page when it is served on its own: a bearer token, or a browser's signed cookie.

Inside Airflow's API server the page relies on Airflow's sign-in (``create_app(auth="airflow")``). Served on its
own (``uvicorn --factory pipeline.web:create_app``) it asks for ``PIPELINE_WEB_TOKEN``: in the header
``Authorization: Bearer <token>``, or once in its sign-in form, which sets a session cookie (HttpOnly,
SameSite=Strict, signed with the token, valid :data:`SESSION_S`) that the browser then sends with the page's
links to ``api/*``. The form keeps the token out of URLs, and so out of browser histories and access logs.
Without a token it serves no one, unless ``PIPELINE_WEB_ANONYMOUS`` says it is for local use.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from html import escape
from urllib.parse import parse_qs

from fastapi import FastAPI
from fastapi.requests import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import SecretStr

log = logging.getLogger(__name__)

#: The browser's session cookie: ``<expiry, unix seconds>.<HMAC-SHA256 of it, keyed with the token>``.
COOKIE = "pipeline_monitoring_session"
#: How long a browser's sign-in lasts, in seconds.
SESSION_S = 12 * 3600
#: A shorter token could be guessed: the page counts no failed attempts.
MIN_TOKEN_LENGTH = 16
#: The sign-in form's body at most, in bytes (it holds one field).
MAX_FORM_BYTES = 4096
_REALM = 'Bearer realm="pipeline monitoring page"'
_NO_STORE = {"Cache-Control": "no-store"}


class Refused(Exception):
    """A request turned away: 401 (no credential, or a wrong one) or 503 (no token to check it against)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


@dataclass(frozen=True)
class TokenGuard:
    """The check a page served on its own runs before every request but ``/health``.

    Args:
        token: the credential (``PIPELINE_WEB_TOKEN``); None or empty: not set.
        anonymous: serve without a credential when no token is set (``PIPELINE_WEB_ANONYMOUS``, local use).
    """

    token: SecretStr | None = None
    anonymous: bool = False

    @property
    def _key(self) -> bytes:
        return self.token.get_secret_value().encode() if self.token is not None else b""

    @property
    def problem(self) -> str | None:
        """Return why the page serves no one (the line every request gets), or None when it can serve."""
        key = self._key
        if not key and not self.anonymous:
            return (
                "PIPELINE_WEB_TOKEN is not set: the monitoring page serves no one on its own. Set it, or set "
                "PIPELINE_WEB_ANONYMOUS=true for local use."
            )
        if key and len(key) < MIN_TOKEN_LENGTH:
            return f"PIPELINE_WEB_TOKEN is shorter than {MIN_TOKEN_LENGTH} characters: the page serves no one."
        return None

    @property
    def open(self) -> bool:
        """Return True when every request is let in (no token, and the anonymous flag set)."""
        return not self._key and self.anonymous

    def accepts(self, candidate: str) -> bool:
        """Return True when ``candidate`` is the token (compared in constant time)."""
        key = self._key
        return bool(key) and hmac.compare_digest(candidate.encode("utf-8", "replace"), key)

    def session(self, now_s: float | None = None) -> str:
        """Return a session cookie's value, valid :data:`SESSION_S` from ``now_s`` (unix seconds)."""
        expires = int(time.time() if now_s is None else now_s) + SESSION_S
        return f"{expires}.{self._mac(expires)}"

    def _mac(self, expires: int) -> str:
        return hmac.new(self._key, f"pipeline-web-session:{expires}".encode(), hashlib.sha256).hexdigest()

    def valid_session(self, value: str, now_s: float | None = None) -> bool:
        """Return True when ``value`` is a session cookie this token signed and it has not expired."""
        stamp, dot, mac = value.partition(".")
        if not (dot and stamp.isascii() and stamp.isdigit() and len(stamp) <= 12 and self._key):
            return False
        expires, now = int(stamp), time.time() if now_s is None else now_s
        return now < expires <= now + SESSION_S and hmac.compare_digest(mac.encode(), self._mac(expires).encode())

    def check(self, request: Request) -> None:
        """Let ``request`` through, or raise :class:`Refused` (a FastAPI dependency).

        Raises:
            Refused: 503 when the page serves no one, 401 without a valid bearer token or session cookie.
        """
        problem = self.problem
        if problem is not None:
            raise Refused(503, problem)
        if self.open:
            return
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, credential = header.strip().partition(" ")
            if scheme.lower() != "bearer":
                raise Refused(401, "the Authorization header must be 'Bearer <PIPELINE_WEB_TOKEN>'")
            if self.accepts(credential.strip()):
                return
            raise Refused(401, "wrong bearer token")
        cookie = request.cookies.get(COOKIE)
        if cookie is not None and self.valid_session(cookie):
            return
        raise Refused(
            401,
            "the monitoring page needs a credential: send 'Authorization: Bearer <PIPELINE_WEB_TOKEN>', "
            "or sign in with a browser at sign-in",
        )


def _to_root(request: Request) -> str:
    """Return the relative link from ``request``'s path to the app's root (``./``, ``../``): works behind a prefix."""
    path, root = str(request.scope.get("path", "/")), str(request.scope.get("root_path", ""))
    if root and path.startswith(root):
        path = path[len(root) :]
    return "../" * max(path.count("/") - 1, 0) or "./"


def _cookie_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/") + "/"


def sign_in_page(action: str, message: str | None = None) -> str:
    """Return the sign-in form's HTML (no script, nothing loaded from elsewhere), posting to ``action``."""
    notice = f'<p class="notice">{escape(message)}</p>' if message else ""
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Monitoring: sign in</title>
<style>body {{ font: 14px/1.45 system-ui, sans-serif; margin: 48px auto; max-width: 420px; color: #1f2933; }}
input {{ width: 100%; padding: 6px; margin: 6px 0 12px; }} .notice {{ color: #c81e1e; }}</style></head>
<body>
<h1>Monitoring page</h1>
<p>Sign in with the page's token (<code>PIPELINE_WEB_TOKEN</code>).</p>
{notice}
<form method="post" action="{escape(action)}">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
</form>
</body>
</html>
"""


def refused(request: Request, exc: Refused) -> Response:
    """Answer a :class:`Refused` request: the sign-in form for a browser, else one JSON line."""
    if exc.status_code == 401 and "text/html" in request.headers.get("accept", ""):
        page = sign_in_page(f"{_to_root(request)}sign-in", exc.message)
        return HTMLResponse(page, status_code=401, headers={"WWW-Authenticate": _REALM, **_NO_STORE})
    headers = {"WWW-Authenticate": _REALM} if exc.status_code == 401 else {}
    return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=headers)


async def _form_token(request: Request) -> str | None:
    """Return the sign-in form's ``token`` field, or None for a body that is too large or not one form."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
    except ValueError:
        return None
    values = fields.get("token", [])
    return values[0] if len(values) == 1 else None


def add_sign_in(app: FastAPI, guard: TokenGuard) -> None:
    """Add ``GET /sign-in`` (the form) and ``POST /sign-in`` (checks the token, sets the session cookie) to ``app``."""

    @app.get("/sign-in", response_class=HTMLResponse)
    def sign_in_form(request: Request) -> Response:
        if guard.problem is not None:
            raise Refused(503, guard.problem)
        if guard.open:
            return RedirectResponse("./", status_code=303)
        return HTMLResponse(sign_in_page("sign-in"), headers=_NO_STORE)

    @app.post("/sign-in", response_class=HTMLResponse)
    async def sign_in(request: Request) -> Response:
        if guard.problem is not None:
            raise Refused(503, guard.problem)
        if guard.open:
            return RedirectResponse("./", status_code=303)
        token = await _form_token(request)
        if token is None:
            return HTMLResponse(sign_in_page("sign-in", "Send one token field."), status_code=400, headers=_NO_STORE)
        if not guard.accepts(token):
            log.warning("monitoring page: a sign-in with a wrong token from %s", request.client and request.client.host)
            page = sign_in_page("sign-in", "That is not the page's token.")
            return HTMLResponse(page, status_code=401, headers={"WWW-Authenticate": _REALM, **_NO_STORE})
        answer = RedirectResponse("./", status_code=303, headers=_NO_STORE)
        answer.set_cookie(
            COOKIE,
            guard.session(),
            max_age=SESSION_S,
            path=_cookie_path(request),
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return answer
