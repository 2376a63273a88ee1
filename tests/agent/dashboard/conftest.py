"""A small realistic database and a real dashboard server on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.dashboard.app import DashboardConfig
from agent.dashboard.bench import build_database
from agent.dashboard.security import Guard
from agent.dashboard.server import DashboardServer, Listen
from agent.sqlite import open_engine

TOKEN = "s3cret-token"
AGENT = "gw-test"


@pytest.fixture(scope="session")
def built_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight pumps over four days (some of them failing), built once per session."""
    path = tmp_path_factory.mktemp("dashboard") / "template.db"
    build_database(path, assets=8, days=4.0, reading_period_s=60.0, prediction_period_s=240.0)
    return path


@pytest.fixture
def dashboard_db(built_db: Path, tmp_path: Path) -> Path:
    """A private copy: tests write labels."""
    path = tmp_path / "edgewatch.db"
    shutil.copyfile(built_db, path)
    return path


@dataclass
class Served:
    """A dashboard server running in a thread of its own event loop."""

    url: str
    db: Path
    loop: asyncio.AbstractEventLoop
    jar: CookieJar = field(default_factory=CookieJar)

    def request(
        self,
        path: str,
        *,
        method: str = "GET",
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        cookies: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        handlers: list[Any] = [_NoRedirect()]
        if cookies:
            handlers.append(urllib.request.HTTPCookieProcessor(self.jar))
        opener = urllib.request.build_opener(*handlers)
        req = urllib.request.Request(
            self.url.rstrip("/") + path, data=data, method=method, headers=headers or {}
        )
        try:
            with opener.open(req, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        status, _, body = self.request(path, **kwargs)
        return status, orjson.loads(body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the tests look at the 303 itself


def serve(db: Path, *, token: str | None, loopback: bool) -> Iterator[Served]:
    engine = open_engine(db, create=False)
    loop = asyncio.new_event_loop()
    config = DashboardConfig(agent=AGENT, sync=True, guard=Guard(token, loopback=loopback))
    server = DashboardServer(engine, Listen("127.0.0.1", 0, token), config)
    started = threading.Event()
    holder: list[asyncio.Task[None]] = []

    async def main() -> None:
        async def signal_start() -> None:
            await server.started.wait()
            started.set()

        waiter = asyncio.create_task(signal_start())
        try:
            await server.run()
        finally:
            waiter.cancel()

    def run() -> None:
        asyncio.set_event_loop(loop)
        holder.append(loop.create_task(main()))
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(holder[0])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10), "the dashboard did not start"
    try:
        yield Served(server.url, db, loop)
    finally:
        loop.call_soon_threadsafe(holder[0].cancel)
        thread.join(10)
        assert not thread.is_alive(), "the dashboard did not stop when cancelled"
        loop.close()
        engine.dispose()


@pytest.fixture
def local(dashboard_db: Path) -> Iterator[Served]:
    """On loopback with a token: reads open, writes need the token."""
    yield from serve(dashboard_db, token=TOKEN, loopback=True)


@pytest.fixture
def exposed(dashboard_db: Path) -> Iterator[Served]:
    """As if bound to a non-loopback address: every request needs the token."""
    yield from serve(dashboard_db, token=TOKEN, loopback=False)


@pytest.fixture
def readonly(dashboard_db: Path) -> Iterator[Served]:
    yield from serve(dashboard_db, token=None, loopback=True)
