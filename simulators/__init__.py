"""The plant in a box: a degrading pump fleet, dataset replay and bad input on purpose.

Modules, in the order data flows through them:

- :mod:`simulators.pump`: the asset model (centrifugal pump + induction motor), machine
  and sensor faults, fleet planning; seeded per asset.
- :mod:`simulators.dataset`: ``generate_dataset(assets, seed, ...) -> DataFrame`` and
  ``write_dataset(out_dir, ...)``, run-to-failure data offline.
- :mod:`simulators.replay`: C-MAPSS and CSV files as live assets.
- :mod:`simulators.badinput`: malformed messages mixed in, with a record of each.
- :mod:`simulators.stream`: pacing, interleaving, ground truth; ``run_stream``.
- :mod:`simulators.publisher`: the publisher interface and ``make_publisher``;
  backends :mod:`simulators.mqtt_wire` (default) and :mod:`simulators.paho_publisher`.
- :mod:`simulators.fleet`: ``publish_fleet(FleetConfig(...), host=..., port=...)``.
- :mod:`simulators.sparkplug_node`: the same fleet as one Sparkplug B edge node.

Library code never prints: progress arrives through callbacks and results as objects;
``edgewatch simulate`` renders them. Only ``agent.domain``, ``agent.errors``,
``agent.settings`` and ``agent.sparkplug`` (the Sparkplug B codec) may be imported from
the agent.
"""
