"""The edge node's births, data by exception, seq wrapping and Will, read back."""

from __future__ import annotations

from agent import sparkplug as sp
from agent.publish.sparkplug_node import EdgeNode


def _read(message: tuple[str, bytes]) -> tuple[sp.Topic, sp.Payload]:
    return sp.parse_topic(message[0]), sp.decode(message[1])


def _born(assets: int = 1) -> EdgeNode:
    node = EdgeNode("plant1", "ew-1", bdseq=3)
    for i in range(assets):
        node.update(f"pump-{i}", {"anomaly_score": 0.1, "alert_active": False}, 1)
    node.births(2)
    return node


def test_values_before_the_nbirth_are_carried_by_the_births() -> None:
    node = EdgeNode("plant1", "ew-1", bdseq=3)
    assert node.update("pump-0", {"anomaly_score": 0.1, "severity": "none"}, 1) == []
    births = [_read(m) for m in node.births(2)]
    (nt, nbirth), (dt, dbirth) = births
    assert nt.kind is sp.MessageType.NBIRTH and nbirth.seq == 0
    assert sp.bdseq_of(nbirth) == 3
    assert {m.name for m in nbirth.metrics} == {sp.BDSEQ_METRIC, sp.REBIRTH_METRIC}
    assert (dt.kind, dt.device, dbirth.seq) == (sp.MessageType.DBIRTH, "pump-0", 1)
    by_name = {m.name: m for m in dbirth.metrics}
    assert by_name["anomaly_score"].double_value == 0.1
    assert by_name["severity"].string_value == "none"
    assert len({m.alias for m in dbirth.metrics}) == 2


def test_ddata_has_only_the_changed_metrics_by_alias() -> None:
    node = _born()
    assert node.update("pump-0", {"anomaly_score": 0.1, "alert_active": False}, 3) == []
    (topic, ddata) = _read(
        node.update("pump-0", {"anomaly_score": 0.9, "alert_active": False}, 3)[0]
    )
    assert topic.kind is sp.MessageType.DDATA and topic.device == "pump-0"
    assert ddata.seq == 2
    (metric,) = ddata.metrics
    assert metric.name == "" and metric.alias > 0 and metric.double_value == 0.9


def test_a_new_metric_or_asset_gives_a_dbirth_first() -> None:
    node = _born()
    (topic, dbirth) = _read(node.update("pump-0", {"rul": 42.0}, 3)[0])
    assert topic.kind is sp.MessageType.DBIRTH
    assert {m.name for m in dbirth.metrics} == {"anomaly_score", "alert_active", "rul"}
    (topic, dbirth) = _read(node.update("pump-9", {"anomaly_score": 0.5}, 3)[0])
    assert (topic.kind, topic.device) == (sp.MessageType.DBIRTH, "pump-9")


def test_seq_wraps_and_a_null_is_sent_as_null() -> None:
    node = _born()
    seqs = [
        _read(node.update("pump-0", {"anomaly_score": float(i)}, 3)[0])[1].seq for i in range(300)
    ]
    assert seqs[0] == 2 and seqs[253] == 255 and seqs[254] == 0
    (_, ddata) = _read(node.update("pump-0", {"anomaly_score": None}, 4)[0])
    assert ddata.metrics[0].is_null


def test_rebirth_keeps_aliases_and_a_new_session_a_new_bdseq() -> None:
    node = _born(2)
    first = {m.name: m.alias for _, p in map(_read, node.births(5)[1:]) for m in p.metrics}
    node.new_session()
    assert node.update("pump-0", {"anomaly_score": 0.7}, 6) == []
    nt, will = _read(node.will(6))
    assert nt.kind is sp.MessageType.NDEATH and sp.bdseq_of(will) == 4
    births = [_read(m) for m in node.births(7)]
    assert sp.bdseq_of(births[0][1]) == 4
    assert {m.name: m.alias for _, p in births[1:] for m in p.metrics} == first
    assert [p.seq for _, p in births] == [0, 1, 2]
