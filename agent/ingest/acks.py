"""Manual QoS 1 acknowledgements: the one place that reaches under aiomqtt 2.5.

aiomqtt 2.5 acknowledges every message as soon as paho hands it over (its issue
#345); we must acknowledge only after what a message produced is committed, so that
a crash makes the broker redeliver instead of losing it. paho-mqtt 2.x supports that
(``manual_ack_set`` / ``ack``) on the client aiomqtt wraps. aiomqtt 3 has a native
``puback``: replacing this module is the whole migration.
"""

from __future__ import annotations

from collections.abc import Iterable

import aiomqtt
import paho.mqtt.client as paho

from agent.domain import MessageRef


class ManualAcks:
    """Sends PUBACKs for one connection (``session``) of ``client``.

    Create it before the client connects: paho only honours manual acks for messages
    it receives after the switch, and a persistent session may redeliver as soon as
    CONNACK arrives.
    """

    __slots__ = ("_paho", "session", "stale")

    def __init__(self, client: aiomqtt.Client, session: int) -> None:
        self._paho: paho.Client = client._client  # the reach-under: see the module docstring
        self._paho.manual_ack_set(True)
        self.session = session
        #: Refs of older sessions skipped so far; the broker redelivers those messages.
        self.stale = 0

    def ack(self, refs: Iterable[MessageRef]) -> int:
        """Acknowledge QoS 1 refs of this session; return how many PUBACKs were sent.

        A message id only means something on the connection it arrived on (ids are
        reused), so refs of any other session are counted in ``stale`` and skipped.
        """
        sent = 0
        session = self.session
        ack = self._paho.ack
        for ref in refs:
            if ref.qos == 0:
                continue
            if ref.session != session:
                self.stale += 1
                continue
            if ack(ref.mid, ref.qos) == paho.MQTT_ERR_SUCCESS:
                sent += 1
        return sent
