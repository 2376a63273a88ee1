"""A promoted model replaces the live one in memory: the old one's graphs are freed.

The agent runs in a child process (``Agent.run`` freezes the garbage collector of its
process) against a real broker, with a real commissioning child and TUF repository.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from models.lean import onnxruntime_available
from tests.support import REPO, Broker, cli_env

pytestmark = pytest.mark.skipif(not onnxruntime_available(), reason="needs onnxruntime")

_CHILD = """
import asyncio, gc, json, sys, weakref
from pathlib import Path
from agent.runtime import Agent
from agent.settings import load_settings
from models.updates.repository import init_keys, publish
from tests.agent.updates.bundles import make_version
from tests.e2e.fleet import make_fleet
from tests.e2e.fleet import publish as publish_fleet

SHIPPED = "pump@2659d6ea3f090cae"


class Port:
    host = "127.0.0.1"
    port = int(sys.argv[2])


async def main() -> None:
    tmp = Path(sys.argv[1])
    keys, repo = tmp / "keys", tmp / "repo"
    init_keys(keys)
    publish(make_version(tmp, "good"), repo.as_uri(), keys)
    settings = load_settings(None, {
        "mqtt": {"host": "127.0.0.1", "port": Port.port},
        "identity": {"site": "e2e", "agent": f"gw-mem-{tmp.name}"},
        "storage": {"data_dir": str(tmp / "data")},
        "model": {"backend": "onnx", "commission_samples": 150, "commission_cpu_budget_s": 5.0},
        "sync": {"enabled": False},
        "updates": {"enabled": True, "repo": repo.as_uri(), "trusted_root": str(keys / "root.json"),
                    "probation_windows": 50, "probation_s": 0, "control_interval_s": 0.2},
    })
    agent = Agent(settings)
    task = asyncio.create_task(agent.run())
    await agent.subscribed.wait()
    assert agent.inference is not None
    old = weakref.ref(agent.inference.predictor)
    old_graphs = weakref.ref(agent.inference.predictor.bundle)
    fleet = make_fleet(1, 300, fault_fraction=0.0, seed=3)
    await asyncio.to_thread(publish_fleet, Port, fleet.chunks, site="e2e")
    async with asyncio.timeout(120):
        while agent.inference.predictor.model_version == SHIPPED:
            await asyncio.sleep(0.05)  # polling a condition of this process
    async with asyncio.timeout(10):
        # A batch in flight may still hold the old predictor for a moment.
        while old() is not None or old_graphs() is not None:
            gc.collect()
            await asyncio.sleep(0.05)
    print(json.dumps({"live": agent.inference.predictor.model_version}))
    agent.request_stop()
    await task


asyncio.run(main())
"""


def test_a_promoted_model_frees_the_one_it_replaced(tmp_path: Path, mqtt_broker: Broker) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path), str(mqtt_broker.port)],
        cwd=REPO,
        env=cli_env({"PYTHONPATH": str(REPO)}),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["live"] != "pump@2659d6ea3f090cae"
