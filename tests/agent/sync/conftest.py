"""Real things for the sync tests: a moto S3 server on 127.0.0.1, settings, a backlog."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from sqlalchemy import Connection

from agent import outbox
from agent.settings import Settings
from agent.sqlite import open_engine
from agent.sync.targets import S3Options, S3Target
from tests.support import free_port

SITE = "plant-a"
AGENT = "gw-1"
KEY = "testing"


@dataclass
class S3Server:
    endpoint: str
    port: int

    def client(self) -> Any:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=KEY,
            aws_secret_access_key=KEY,
        )

    def new_bucket(self) -> str:
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def target(self, bucket: str, prefix: str = "edge") -> S3Target:
        return S3Target(
            bucket,
            prefix,
            S3Options(self.endpoint, "us-east-1", KEY, KEY),
        )


def start_moto(port: int) -> ThreadedMotoServer:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """One moto S3 HTTP endpoint for the session; each test makes its own bucket."""
    port = free_port()
    server = start_moto(port)
    try:
        yield S3Server(f"http://127.0.0.1:{port}", port)
    finally:
        server.stop()


def make_settings(data_dir: Path, **sync: Any) -> Settings:
    storage: dict[str, Any] = {"data_dir": data_dir, "database": data_dir / "edgewatch.db"}
    if "disk_budget_mb" in sync:
        storage["disk_budget_mb"] = sync.pop("disk_budget_mb")
    return Settings(
        identity={"site": SITE, "agent": AGENT},  # type: ignore[arg-type]
        storage=storage,  # type: ignore[arg-type]
        sync=sync,  # type: ignore[arg-type]
    )


def s3_sync(server: S3Server, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "target": f"s3://{bucket}/edge",
        "s3_endpoint_url": server.endpoint,
        "s3_region": "us-east-1",
        "s3_access_key_id": KEY,
        "s3_secret_access_key": KEY,
        **extra,
    }


def s3_env(server: S3Server, bucket: str, data_dir: Path, secret: str = KEY) -> dict[str, str]:
    """Environment for a CLI subprocess syncing ``data_dir`` to the bucket."""
    return {
        "EDGEWATCH_STORAGE__DATA_DIR": str(data_dir),
        "EDGEWATCH_IDENTITY__SITE": SITE,
        "EDGEWATCH_IDENTITY__AGENT": AGENT,
        "EDGEWATCH_SYNC__TARGET": f"s3://{bucket}/edge",
        "EDGEWATCH_SYNC__S3_ENDPOINT_URL": server.endpoint,
        "EDGEWATCH_SYNC__RETRAINING": "false",
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def enqueue_file(
    conn: Connection, data_dir: Path, *, key: str, kind: str, created_ms: int, body: bytes
) -> None:
    """An outbox item whose body is a file under the outbox folder, as retraining data is."""
    path = data_dir / outbox.OUTBOX_DIR / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    outbox.enqueue(
        conn,
        key=key,
        kind=kind,
        created_ms=created_ms,
        path=key,
        size_bytes=len(body),
        digest=outbox.sha256(body),
    )


def fill_backlog(
    db: Path, items: int, *, body_bytes: int = 2048, files_every: int = 10, seed: int = 1
) -> dict[str, bytes]:
    """Enqueue ``items`` (inline summaries/events and some file items); returns key -> bytes."""
    data_dir = db.parent
    expected: dict[str, bytes] = {}
    engine = open_engine(db, create=False)
    base_ms = 1_763_900_000_000
    created = outbox.now_ms()
    try:
        with engine.begin() as conn:
            for i in range(items):
                body = (f"{seed}:{i}:".encode() + os.urandom(body_bytes))[:body_bytes]
                kind = outbox.EVENT if i % 7 == 0 else outbox.SUMMARY
                ts = base_ms + i * 300_000
                if files_every and i % files_every == files_every - 1:
                    kind = outbox.RETRAINING
                key = outbox.item_key(
                    site=SITE,
                    agent=AGENT,
                    kind=kind,
                    ts_ms=ts,
                    asset=f"pump-{i % 5}",
                    name=f"{outbox.iso_ms(ts)}-{seed}-{i}.bin",
                )
                if kind == outbox.RETRAINING:
                    enqueue_file(
                        conn, data_dir, key=key, kind=kind, created_ms=created + i, body=body
                    )
                else:
                    outbox.enqueue(conn, key=key, kind=kind, created_ms=created + i, body=body)
                expected[key] = body
    finally:
        engine.dispose()
    return expected
