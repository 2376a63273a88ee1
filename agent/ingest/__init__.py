"""MQTT ingest: topics, payload decoding and validation, the broker link, publishers.

The runtime builds one :class:`~agent.ingest.link.MqttLink` per process, feeds a
:class:`~agent.ingest.subscriber.Subscriber` from it and acknowledges messages through
``link.ack(refs)`` once what they produced is committed.
"""
