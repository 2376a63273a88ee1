"""Signed model updates over The Update Framework (python-tuf).

:mod:`models.updates.repository` is the cloud side (keys, publish, revoke);
:mod:`models.updates.client` the gateway side (fetch, verify, stage). See
docs/updates.md for the operator's guide.
"""
