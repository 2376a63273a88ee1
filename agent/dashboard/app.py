"""The dashboard's Starlette application: pages, the JSON API, forms.

Every database call runs in a worker thread (``run_in_threadpool``): inside the agent
the event loop also carries MQTT, inference and the recorder, and a page must never
hold them up. Pages are Jinja2 templates with autoescaping on for everything; no
inline script anywhere, so the Content-Security-Policy allows scripts from this
server's /static only.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

import orjson
from jinja2 import Environment, FileSystemLoader
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent import outbox
from agent.dashboard import data
from agent.dashboard.security import CSRF_COOKIE, SESSION_COOKIE, SESSION_S, Guard
from agent.errors import EdgewatchError
from agent.storage import labels

HERE: Final = Path(__file__).resolve().parent
#: Headers on every response: no framing, no sniffing, scripts and styles from here only.
SECURITY_HEADERS: Final = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
#: Longest note a form may send (the storage layer has the same bound).
MAX_FORM_BYTES: Final = 16_384


@dataclass(frozen=True)
class DashboardConfig:
    """What the application needs besides the database."""

    #: This gateway's name (label items' object keys).
    agent: str
    #: Whether labels are queued for the cloud (sync.enabled).
    sync: bool
    guard: Guard
    #: Shown in the page header: the agent serves it, or a database file alone.
    source: str = ""


# ------------------------------------------------------------------ formatting


def _when(ms: Any) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(int(ms) / 1000).astimezone().strftime("%Y-%m-%d %H:%M")


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    x = float(value)
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.{digits}f}"


def _age(ms: Any, now_ms: int) -> str:
    if ms is None:
        return "never"
    s = max(0, (now_ms - int(ms)) // 1000)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if s >= size:
            return f"{s // size} {unit} ago"
    return f"{s} s ago"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, num=_num, pathpart=lambda s: quote(str(s), safe=""))
    env.globals.update(age=_age, labels=labels.LABELS)
    return env


# ------------------------------------------------------------------ middleware


class _Headers:
    """Adds the security headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ------------------------------------------------------------------ application


class Dashboard:
    """Handlers bound to one database and one configuration."""

    def __init__(self, engine: Engine, config: DashboardConfig) -> None:
        self.engine = engine
        self.config = config
        self.guard = config.guard
        self.templates = _environment()

    # -- plumbing -----------------------------------------------------------------------

    async def _read(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def call() -> Any:
            with self.engine.connect() as conn:
                return fn(conn, *args, **kwargs)

        return await run_in_threadpool(call)

    def _logged_in(self, request: Request) -> bool:
        return self.guard.session_ok(request.cookies.get(SESSION_COOKIE))

    def _may_read(self, request: Request) -> bool:
        if not self.guard.reads_need_login:
            return True
        return self._logged_in(request) or self.guard.bearer_ok(
            request.headers.get("authorization")
        )

    def _page(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        browser = request.cookies.get(CSRF_COOKIE)
        fresh = browser is None
        if browser is None:
            browser = self.guard.new_browser_id()
        html = self.templates.get_template(template).render(
            request_path=request.url.path,
            csrf=self.guard.csrf_token(browser),
            logged_in=self._logged_in(request),
            writable=self.guard.writable,
            reads_need_login=self.guard.reads_need_login,
            source=self.config.source,
            now_ms=outbox.now_ms(),
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        if fresh:
            response.set_cookie(CSRF_COOKIE, browser, httponly=True, samesite="strict")
        return response

    def _error(self, request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=status)
        return self._page(request, "error.html", status=status, message=message)

    def _guarded(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Reads: the login rule; every handler: one clear error for what is missing."""

        async def run(request: Request) -> Response:
            if not self._may_read(request):
                if request.url.path.startswith("/api/"):
                    return JSONResponse(
                        {"error": "this dashboard needs the token: Authorization: Bearer"},
                        status_code=401,
                    )
                target = urlencode({"next": request.url.path})
                return RedirectResponse(f"/login?{target}", status_code=303)
            try:
                return await handler(request)
            except data.NotFoundError as exc:
                return self._error(request, 404, str(exc.args[0]))
            except EdgewatchError as exc:
                return self._error(request, 400, str(exc))

        return run

    async def _form(self, request: Request) -> dict[str, str] | Response:
        """The posted form, once its origin and CSRF token are checked."""
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            return self._error(request, 403, "form posted from another site")
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            return self._error(request, 411, "a form needs its Content-Length")
        if int(length) > MAX_FORM_BYTES:
            return self._error(request, 413, "form too large")
        form = await request.form(max_files=0, max_fields=20)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        if not self.guard.csrf_ok(request.cookies.get(CSRF_COOKIE), fields.get("csrf")):
            return self._error(
                request, 403, "the form has expired or came from elsewhere: reload the page"
            )
        return fields

    def _may_write(self, request: Request) -> Response | None:
        if not self.guard.writable:
            return self._error(
                request, 403, "read-only: set [dashboard] token to acknowledge and label"
            )
        if request.url.path.startswith("/api/"):
            if self.guard.bearer_ok(request.headers.get("authorization")):
                return None
            return self._error(request, 401, "writes need the token: Authorization: Bearer")
        if self._logged_in(request):
            return None
        return self._error(request, 401, "log in with the dashboard token first")

    # -- pages --------------------------------------------------------------------------

    async def fleet_page(self, request: Request) -> Response:
        fleet = await self._read(data.fleet, outbox.now_ms())
        return self._page(request, "fleet.html", fleet=fleet)

    async def asset_page(self, request: Request) -> Response:
        name = request.path_params["name"]
        since, until = _range_params(request)

        def load(conn: Any) -> dict[str, Any]:
            start, end = data.time_range(conn, name, since, until)
            return {
                "since_ms": start,
                "until_ms": end,
                "incidents": data.alerts(
                    conn, asset=name, active_since_ms=start, active_until_ms=end
                ),
                "names": data.asset_names(conn),
            }

        found = await self._read(load)
        spans = {"1h": 3_600_000, "6h": 21_600_000, "24h": 86_400_000, "7d": 604_800_000}
        return self._page(request, "asset.html", asset=name, spans=spans, **found)

    async def alerts_page(self, request: Request) -> Response:
        filters = _alert_filters(request)
        found = await self._read(data.alerts, **filters)
        names = await self._read(data.asset_names)
        return self._page(
            request, "alerts.html", alerts=found, filters=filters, names=names, message=None
        )

    async def login_page(self, request: Request) -> Response:
        return self._page(request, "login.html", next=_local_path(request.query_params))

    async def login(self, request: Request) -> Response:
        fields = await self._form(request)
        if isinstance(fields, Response):
            return fields
        if not self.guard.token_ok(fields.get("token")):
            return self._page(
                request,
                "login.html",
                status=401,
                next=_local_path(fields),
                message="wrong token" if self.guard.writable else "no token is configured",
            )
        response = RedirectResponse(_local_path(fields), status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            self.guard.new_session(),
            max_age=SESSION_S,
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, request: Request) -> Response:
        fields = await self._form(request)
        if isinstance(fields, Response):
            return fields
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    async def ack_form(self, request: Request) -> Response:
        refused = self._may_write(request)
        if refused is not None:
            return refused
        fields = await self._form(request)
        if isinstance(fields, Response):
            return fields
        alert_id = _alert_id(request)
        by = fields.get("by") or "dashboard"
        await run_in_threadpool(labels.acknowledge_alert, self.engine, alert_id, by=by)
        return RedirectResponse(_local_path(fields, f"/alerts#alert-{alert_id}"), status_code=303)

    async def label_form(self, request: Request) -> Response:
        refused = self._may_write(request)
        if refused is not None:
            return refused
        fields = await self._form(request)
        if isinstance(fields, Response):
            return fields
        alert_id = _alert_id(request)
        await run_in_threadpool(
            self._label, alert_id, fields.get("label", ""), fields.get("note"), fields.get("by")
        )
        return RedirectResponse(_local_path(fields, f"/alerts#alert-{alert_id}"), status_code=303)

    def _label(self, alert_id: int, label: str, note: str | None, by: str | None) -> Any:
        return labels.label_alert(
            self.engine,
            alert_id,
            label,
            agent=self.config.agent,
            note=note,
            by=by or "dashboard",
            sync=self.config.sync,
        )

    # -- JSON API -----------------------------------------------------------------------

    async def api_fleet(self, request: Request) -> Response:
        return JSONResponse(await self._read(data.fleet, outbox.now_ms()))

    async def api_assets(self, request: Request) -> Response:
        return JSONResponse({"assets": await self._read(data.asset_names)})

    async def api_asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        since, until = _range_params(request)

        def load(conn: Any) -> dict[str, Any]:
            start, end = data.time_range(conn, name, since, until)
            return data.asset(conn, name, start, end)

        return JSONResponse(await self._read(load))

    async def api_alerts(self, request: Request) -> Response:
        return JSONResponse({"alerts": await self._read(data.alerts, **_alert_filters(request))})

    async def api_alert(self, request: Request) -> Response:
        return JSONResponse(await self._read(data.alert, _alert_id(request)))

    async def api_ack(self, request: Request) -> Response:
        refused = self._may_write(request)
        if refused is not None:
            return refused
        body = await _json_body(request)
        done = await run_in_threadpool(
            labels.acknowledge_alert, self.engine, _alert_id(request), by=_text(body, "by")
        )
        return JSONResponse(
            {
                "alert_id": done.alert_id,
                "acknowledged_ms": done.acknowledged_ms,
                "acknowledged_by": done.by,
                "changed": done.changed,
            }
        )

    async def api_label(self, request: Request) -> Response:
        refused = self._may_write(request)
        if refused is not None:
            return refused
        body = await _json_body(request)
        done = await run_in_threadpool(
            self._label,
            _alert_id(request),
            _text(body, "label") or "",
            _text(body, "note"),
            _text(body, "by"),
        )
        return JSONResponse(
            {
                "alert_id": done.label.alert_id,
                "label": done.label.label,
                "note": done.label.note,
                "by": done.label.by,
                "labelled_ms": done.label.labelled_ms,
                "key": done.key,
                "acknowledged": done.acknowledged,
            }
        )


# ------------------------------------------------------------------ parameters


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise EdgewatchError(f"{name} must be epoch milliseconds, not {raw[:40]!r}") from None


def _range_params(request: Request) -> tuple[int | None, int | None]:
    since, until = _int_param(request, "since"), _int_param(request, "until")
    if since is not None and until is not None and until <= since:
        raise EdgewatchError("until must be after since")
    return since, until


def _alert_filters(request: Request) -> dict[str, Any]:
    q = request.query_params
    status = q.get("status") or None
    label = q.get("label") or None
    if status not in (None, "open", "closed"):
        raise EdgewatchError("status is open or closed")
    if label not in (None, "none", *labels.LABELS):
        raise EdgewatchError(f"label is none or one of {', '.join(labels.LABELS)}")
    limit = _int_param(request, "limit") or data.ALERTS_LIMIT
    return {
        "asset": q.get("asset") or None,
        "status": status,
        "label": label,
        "unacknowledged": q.get("unacknowledged") in ("1", "true", "on"),
        "limit": max(1, min(limit, 1000)),
    }


def _alert_id(request: Request) -> int:
    try:
        return int(request.path_params["alert_id"])
    except (KeyError, ValueError):
        raise data.NotFoundError("no such alert") from None


def _local_path(params: Any, default: str = "/") -> str:
    """A redirect target from the request: a path on this server, nothing else."""
    target = str(params.get("next") or "")
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


async def _json_body(request: Request) -> dict[str, Any]:
    length = request.headers.get("content-length")
    if length is None or not length.isdigit() or int(length) > MAX_FORM_BYTES:
        # Without a length the body is chunked: read up to the bound, no further.
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_FORM_BYTES:
                raise EdgewatchError("request body too large")
    else:
        raw = await request.body()
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise EdgewatchError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise EdgewatchError("the body is a JSON object")
    return body


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise EdgewatchError(f"{key} is a string")
    return value


def create_app(engine: Engine, config: DashboardConfig) -> ASGIApp:
    """The ASGI application: pages, /api/, /static/."""
    d = Dashboard(engine, config)
    g = d._guarded
    routes = [
        Route("/", g(d.fleet_page)),
        Route("/assets/{name:path}", g(d.asset_page)),
        Route("/alerts", g(d.alerts_page)),
        Route("/alerts/{alert_id:int}/ack", g(d.ack_form), methods=["POST"]),
        Route("/alerts/{alert_id:int}/label", g(d.label_form), methods=["POST"]),
        Route("/login", d.login_page),
        Route("/login", d.login, methods=["POST"]),
        Route("/logout", d.logout, methods=["POST"]),
        Route("/api/fleet", g(d.api_fleet)),
        Route("/api/assets", g(d.api_assets)),
        Route("/api/assets/{name:path}", g(d.api_asset)),
        Route("/api/alerts", g(d.api_alerts)),
        Route("/api/alerts/{alert_id:int}", g(d.api_alert)),
        Route("/api/alerts/{alert_id:int}/ack", g(d.api_ack), methods=["POST"]),
        Route("/api/alerts/{alert_id:int}/label", g(d.api_label), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return _Headers(Starlette(routes=routes))
