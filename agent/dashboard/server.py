"""The dashboard's HTTP server: uvicorn on a socket bound here, in the caller's event loop.

Inside the agent (``edgewatch run --http``) it is one more task of the runtime's
TaskGroup and stops with it; ``edgewatch dashboard`` runs it alone. The socket is
bound before uvicorn starts, so a port in use is one clear error at start instead of
uvicorn's ``sys.exit``; uvicorn's own signal handling is off (the agent has its own,
and must not lose SIGTERM to a web server).

Starlette, Jinja2 and uvicorn are imported only here (and by the app module this
imports), when a dashboard is asked for: the plain agent never loads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from agent.dashboard.app import DashboardConfig, create_app
from agent.dashboard.security import Guard, is_loopback
from agent.errors import ConfigError, EdgewatchError
from agent.logs import fields
from agent.settings import Settings
from agent.storage import migrate

log = logging.getLogger(__name__)

#: Seconds open connections get to finish when the server stops.
SHUTDOWN_GRACE_S = 3.0


@dataclass(frozen=True)
class Listen:
    host: str
    port: int
    token: str | None

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def listen_of(settings: Settings) -> Listen | None:
    """Where to serve (None: no dashboard), refused when the address is not loopback
    and no token is set (reads would be open to the network)."""
    where = settings.dashboard.host_port
    if where is None:
        return None
    token = settings.dashboard.token
    listen = Listen(where[0], where[1], None if token is None else token.get_secret_value())
    if not listen.loopback and not listen.token:
        raise ConfigError(
            [
                f"dashboard.address {settings.dashboard.address} is not loopback: set "
                "dashboard.token (every page then needs it), or bind 127.0.0.1"
            ]
        )
    return listen


def bind(listen: Listen) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listen.host, listen.port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise EdgewatchError(
            f"cannot serve the dashboard on {listen.host}:{listen.port}: {exc.strerror}",
            hint="choose a free port with --http HOST:PORT",
        ) from None
    return sock


class DashboardServer:
    """``await DashboardServer(engine, listen, config).run()`` until cancelled."""

    def __init__(self, engine: Engine, listen: Listen, config: DashboardConfig) -> None:
        import uvicorn

        owner = self

        class _Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                # The process's signals belong to the agent (or the CLI), not to uvicorn.
                yield

            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets)
                owner._on_started()

        self.listen = listen
        self.socket = bind(listen)
        self.port = int(self.socket.getsockname()[1])
        uv_config = uvicorn.Config(
            create_app(engine, config),
            http="h11",
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=int(SHUTDOWN_GRACE_S),
        )
        self.server = _Server(uv_config)
        #: Set once the server accepts connections (tests and the CLI wait on it).
        self.started = asyncio.Event()

    @property
    def url(self) -> str:
        host = f"[{self.listen.host}]" if ":" in self.listen.host else self.listen.host
        return f"http://{host}:{self.port}/"

    async def run(self) -> None:
        try:
            await self.server.serve(sockets=[self.socket])
        except asyncio.CancelledError:
            # Cancelled with the runtime: close the listener and the open connections.
            if self.server.started:
                self.server.force_exit = True
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        self.server.shutdown(sockets=[self.socket]), SHUTDOWN_GRACE_S
                    )
            raise
        finally:
            self.server.should_exit = True
            self.socket.close()

    def _on_started(self) -> None:
        log.info(
            "serving the dashboard",
            extra=fields(url=self.url, loopback=self.listen.loopback),
        )
        self.started.set()


def guard_of(listen: Listen) -> Guard:
    return Guard(token=listen.token, loopback=listen.loopback)


def for_agent(settings: Settings, engine: Engine) -> DashboardServer | None:
    """The agent's dashboard (``[dashboard] address`` / ``run --http``), or None."""
    listen = listen_of(settings)
    if listen is None:
        return None
    config = DashboardConfig(
        agent=settings.identity.agent,
        sync=settings.sync.enabled,
        guard=guard_of(listen),
        source=f"agent {settings.identity.agent}",
    )
    return DashboardServer(engine, listen, config)


def for_database(settings: Settings, path: Path) -> tuple[DashboardServer, Engine]:
    """A dashboard on a database file alone (``edgewatch dashboard``)."""
    listen = listen_of(settings)
    if listen is None:
        raise EdgewatchError("no address to serve on", hint="give --http HOST:PORT")
    engine = migrate.ensure_current(path)
    config = DashboardConfig(
        agent=settings.identity.agent,
        sync=settings.sync.enabled,
        guard=guard_of(listen),
        source=str(path),
    )
    try:
        return DashboardServer(engine, listen, config), engine
    except Exception:
        engine.dispose()
        raise
