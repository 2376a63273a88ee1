"""With Sparkplug out on, the agent's own node on the group is not read as data."""

from __future__ import annotations

import pytest

from agent import sparkplug as sp
from agent.errors import PayloadError
from tests.agent.ingest.test_sparkplug import NOW_MS, decoder, t


def test_the_agents_own_node_is_skipped_only_when_publishing() -> None:
    own_data = sp.data_payload(5, [(NOW_MS, {"anomaly_score": 0.5})], {"anomaly_score": 1})
    topic = t(sp.MessageType.DDATA, "pump-1", node="ew")
    publishing = decoder(publish=True, edge_node_id="ew")
    assert publishing.decode(topic, own_data, NOW_MS) == ()
    assert publishing.effects == []
    # Without publish that node is any other: its data before a birth is refused.
    with pytest.raises(PayloadError):
        decoder(publish=False, edge_node_id="ew").decode(topic, own_data, NOW_MS)
