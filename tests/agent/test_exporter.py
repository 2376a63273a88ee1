"""Prometheus metrics: histogram arithmetic, the exposition format, the HTTP endpoint."""

from __future__ import annotations

import socket
import urllib.request
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.errors import ConfigError, EdgewatchError
from agent.exporter import MetricsServer
from agent.localbroker import free_port
from agent.metrics import Histogram, Metrics
from agent.settings import load_settings


def test_histogram_counts_each_value_in_its_bucket() -> None:
    h = Histogram([0.1, 1.0])
    for value in (0.05, 0.1, 0.5, 3.0):
        h.observe(value)
    # le=0.1 holds 0.05 and 0.1 (Prometheus buckets are inclusive), le=1 adds 0.5.
    assert h.cumulative() == [(0.1, 2), (1.0, 3), (float("inf"), 4)]
    assert h.total == pytest.approx(3.65)
    assert h.quantile(0.5) == 0.1
    assert h.quantile(0.99) == float("inf")
    assert Histogram([1.0]).quantile(0.5) is None


def _metrics() -> Metrics:
    m = Metrics()
    m.messages_received = 120
    m.dead_letters = Counter({"invalid_json": 3, "ts_future": 1})
    m.predictions = 40
    m.broker_connected = True
    m.queue_depths = {"inbound": 2, "records": 7}
    m.sync_backlog = 5
    for seconds in (0.004, 0.02, 0.3):
        m.commit_s.observe(seconds)
    m.inference_batch_windows.observe(64)
    return m


def _scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def test_endpoint_serves_the_agent_metrics() -> None:
    server = MetricsServer(
        "127.0.0.1", free_port(), _metrics(), lambda: {"version": "9.9", "model_version": "m1"}
    )
    try:
        got = _scrape(server.port)
    finally:
        server.close()
    assert got["edgewatch_messages_total"] == {
        (("outcome", "received"),): 120.0,
        (("outcome", "dead_letter"),): 4.0,
    }
    assert got["edgewatch_dead_letters_total"][(("reason", "invalid_json"),)] == 3.0
    assert got["edgewatch_predictions_total"][()] == 40.0
    assert got["edgewatch_broker_connected"][()] == 1.0
    assert got["edgewatch_queue_depth"][(("queue", "records"),)] == 7.0
    assert got["edgewatch_sync_backlog"][()] == 5.0
    assert got["edgewatch_agent_info"][(("model_version", "m1"), ("version", "9.9"))] == 1.0
    commits = got["edgewatch_db_commit_seconds_bucket"]
    assert commits[(("le", "0.005"),)] == 1.0
    assert commits[(("le", "0.025"),)] == 2.0
    assert commits[(("le", "+Inf"),)] == 3.0
    assert got["edgewatch_db_commit_seconds_count"][()] == 3.0
    assert got["edgewatch_db_commit_seconds_sum"][()] == pytest.approx(0.324)
    assert got["edgewatch_inference_batch_windows_bucket"][(("le", "64.0"),)] == 1.0


def test_a_port_in_use_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EdgewatchError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            MetricsServer("127.0.0.1", port, Metrics(), dict)


@pytest.mark.parametrize(
    ("given", "stored"),
    [(":9108", "127.0.0.1:9108"), ("0.0.0.0:9100", "0.0.0.0:9100"), ("[::1]:9108", "[::1]:9108")],
)
def test_metrics_address_setting_is_normalised(given: str, stored: str) -> None:
    settings = load_settings(None, {"metrics": {"address": given}})
    assert settings.metrics.address == stored


@pytest.mark.parametrize("bad", ["9108", "gateway:9108", "127.0.0.1:99999", "127.0.0.1:x"])
def test_bad_metrics_address_is_rejected(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.address"):
        load_settings(None, {"metrics": {"address": bad}})


def test_metrics_are_off_by_default() -> None:
    assert load_settings(None, {}).metrics.host_port is None
