"""Fleet retraining: the cloud side that reads what every gateway synced and trains.

Never imported by ``agent/`` (the gateway install does not carry Ray). Modules:

- :mod:`models.fleet.store`: list and read objects under a ``file://`` or ``s3://`` prefix;
- :mod:`models.fleet.catalog`: which objects are retraining files and labels, deduplicated
  by object key, and the operator labels in force;
- :mod:`models.fleet.data`: rows -> per-asset tables with row classes, the split by asset;
- :mod:`models.fleet.training`: windows, scalers and the sharded training loop that the
  local and the Ray engine share;
- :mod:`models.fleet.engines`: ``local`` and ``ray`` (Ray Data read, Ray Train's
  TorchTrainer);
- :mod:`models.fleet.retrain`, :mod:`models.fleet.compare`, :mod:`models.fleet.status`:
  what ``edgewatch fleet retrain | evaluate | status`` call.
"""
