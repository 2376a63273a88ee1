"""Padding batches to power-of-two sizes changes no result."""

from __future__ import annotations

import numpy as np

from models.predictor import pad_to_bucket


def test_pad_to_bucket_sizes_and_content() -> None:
    x = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    padded = pad_to_bucket(x)
    assert padded.shape == (8, 2, 3)
    np.testing.assert_array_equal(padded[:5], x)
    np.testing.assert_array_equal(padded[5:], np.repeat(x[-1:], 3, axis=0))
    for n in (1, 2, 4, 64):
        assert pad_to_bucket(x[:1].repeat(n, axis=0)).shape[0] == n
    assert pad_to_bucket(x[:0]).shape[0] == 0


def test_batched_and_single_predictions_agree() -> None:
    from models.bundle import load_bundle
    from models.bundles import default_bundle_path
    from models.predictor import Predictor

    predictor = Predictor(load_bundle(default_bundle_path("pump")))
    rng = np.random.default_rng(3)
    head = predictor.bundle.anomaly
    assert head is not None
    level = np.asarray(head.scaler.offset, dtype=np.float32)[None, :, None]
    x = level * (1 + 0.01 * rng.standard_normal((5, len(predictor.sensors), predictor.window)))
    x = x.astype(np.float32)
    batch = predictor.predict(x)
    assert batch.anomaly_score is not None and batch.rul is not None
    for i in range(5):
        one = predictor.predict(x[i : i + 1])
        assert one.anomaly_score is not None and one.rul is not None
        np.testing.assert_allclose(one.anomaly_score[0], batch.anomaly_score[i], rtol=1e-4)
        np.testing.assert_allclose(one.rul[0], batch.rul[i], rtol=1e-4, atol=1e-4)
