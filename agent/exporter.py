"""Prometheus metrics endpoint for ``edgewatch run --metrics-addr HOST:PORT`` (off by default).

The agent's counters live in :class:`agent.metrics.Metrics` as plain attributes that the
stages bump on their hot paths; this collector only reads them when Prometheus
scrapes, so an agent nobody scrapes pays nothing. The HTTP server is
prometheus-client's own, in a daemon thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from agent.errors import EdgewatchError
from agent.metrics import Histogram, Metrics

if TYPE_CHECKING:
    from prometheus_client.core import Metric
    from prometheus_client.registry import CollectorRegistry

PREFIX = "edgewatch"


class AgentCollector:
    """Turns a :class:`Metrics` snapshot into Prometheus metric families at scrape time."""

    def __init__(self, metrics: Metrics, info: Callable[[], Mapping[str, str]]) -> None:
        self.metrics = metrics
        self.info = info

    def describe(self) -> list[Metric]:
        # Returning nothing tells the registry not to call collect() at registration.
        return []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            InfoMetricFamily,
        )

        m = self.metrics
        yield InfoMetricFamily(
            f"{PREFIX}_agent", "Agent and model versions.", value=dict(self.info())
        )
        yield GaugeMetricFamily(f"{PREFIX}_uptime_seconds", "Seconds since start.", m.uptime_s())
        yield GaugeMetricFamily(
            f"{PREFIX}_broker_connected",
            "1 when connected and subscribed to the MQTT broker.",
            1.0 if m.broker_connected else 0.0,
        )
        messages = CounterMetricFamily(
            f"{PREFIX}_messages",
            "MQTT messages received, by outcome.",
            labels=["outcome"],
        )
        dead = sum(m.dead_letters.values())
        messages.add_metric(["received"], m.messages_received)
        messages.add_metric(["dead_letter"], dead)
        yield messages
        dead_letters = CounterMetricFamily(
            f"{PREFIX}_dead_letters", "Rejected messages by reason.", labels=["reason"]
        )
        for reason, n in sorted(m.dead_letters.items()):
            dead_letters.add_metric([str(reason)], n)
        yield dead_letters
        for name, doc, value in (
            ("readings_accepted", "Readings accepted after validation.", m.readings_accepted),
            (
                "readings_redelivered",
                "Readings the broker delivered again.",
                m.readings_redelivered,
            ),
            ("windows_emitted", "Windows handed to the inference queue.", m.windows_emitted),
            (
                "windows_shed",
                "Windows shed under overload: never cut, or dropped for a newer one.",
                m.windows_shed,
            ),
            ("window_restarts", "Windows restarted after a gap in the stream.", m.window_restarts),
            (
                "assets_evicted",
                "Idle uncommissioned assets forgotten at ingest.max_assets.",
                m.assets_evicted,
            ),
            ("predictions", "Predictions made.", m.predictions),
            ("alerts_opened", "Alerts opened.", m.alerts_opened),
            ("alerts_closed", "Alerts closed.", m.alerts_closed),
            ("db_commits", "SQLite write transactions committed.", m.commits),
            ("db_rows_written", "Rows written to SQLite.", m.rows_written),
            ("acks_sent", "QoS 1 messages acknowledged after commit.", m.acks_sent),
            ("broker_connects", "Connections made to the broker.", m.broker_connects),
            ("sync_uploaded", "Objects uploaded to the sync target.", m.sync_uploaded),
            ("sync_errors", "Failed sync passes.", m.sync_errors),
        ):
            yield CounterMetricFamily(f"{PREFIX}_{name}", doc, value)
        depths = GaugeMetricFamily(
            f"{PREFIX}_queue_depth", "Items waiting in each internal queue.", labels=["queue"]
        )
        for queue, depth in sorted(m.queue_depths.items()):
            depths.add_metric([queue], depth)
        yield depths
        yield GaugeMetricFamily(
            f"{PREFIX}_sync_backlog", "Outbox items waiting for upload.", m.sync_backlog
        )
        yield _histogram(
            "prediction_lag_seconds",
            "Reading's own timestamp (window end) to prediction; includes device clock offset.",
            m.prediction_lag_s,
        )
        yield _histogram(
            "inference_batch_windows", "Windows per inference batch.", m.inference_batch_windows
        )
        yield _histogram("inference_seconds", "Time of one inference batch.", m.inference_s)
        yield _histogram("db_commit_seconds", "Time of one SQLite write transaction.", m.commit_s)


def _histogram(name: str, doc: str, hist: Histogram) -> Metric:
    from prometheus_client.core import HistogramMetricFamily

    buckets = [(_le(bound), float(n)) for bound, n in hist.cumulative()]
    return HistogramMetricFamily(f"{PREFIX}_{name}", doc, buckets=buckets, sum_value=hist.total)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class MetricsServer:
    """The running endpoint; :meth:`close` stops it."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        info: Callable[[], Mapping[str, str]],
    ) -> None:
        from prometheus_client import start_http_server
        from prometheus_client.registry import CollectorRegistry

        self.host = host
        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=False)
        self.registry.register(AgentCollector(metrics, info))
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise EdgewatchError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}",
                hint="choose a free port with --metrics-addr (or metrics.address in the config)",
            ) from None
        # Port 0 means "any free port": report the one the system chose.
        self.port: int = self._server.server_address[1]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
