from __future__ import annotations

import torch

from models.network import (
    MAX_PARAMETERS,
    AutoencoderConfig,
    ConvAutoencoder,
    RulCNN,
    RulConfig,
    count_parameters,
    reconstruction_error,
)
from models.retrain_shipped import FD001_CONFIG, PUMP_ANOMALY


def test_rul_cnn_shapes_and_budget() -> None:
    cfg = RulConfig(
        n_sensors=14,
        window=30,
        channels=FD001_CONFIG.channels,
        kernel=FD001_CONFIG.kernel,
        squeeze=FD001_CONFIG.squeeze,
        hidden=FD001_CONFIG.hidden,
    )
    model = RulCNN(cfg).eval()
    assert model(torch.zeros(5, 14, 30)).shape == (5,)
    assert count_parameters(model) <= MAX_PARAMETERS


def test_autoencoder_shapes_and_budget_for_odd_and_even_windows() -> None:
    for window in (31, 32, 60):
        cfg = AutoencoderConfig(
            n_sensors=7, window=window, channels=PUMP_ANOMALY.channels, latent=PUMP_ANOMALY.latent
        )
        model = ConvAutoencoder(cfg).eval()
        x = torch.randn(4, 7, window)
        assert model(x).shape == x.shape
        assert reconstruction_error(model, x).shape == (4,)
        assert count_parameters(model) <= MAX_PARAMETERS


def test_same_seed_same_network() -> None:
    cfg = RulConfig(n_sensors=3, window=10)
    torch.manual_seed(3)
    a = RulCNN(cfg).eval()
    torch.manual_seed(3)
    b = RulCNN(cfg).eval()
    x = torch.randn(2, 3, 10)
    assert torch.equal(a(x), b(x))


def test_config_json_round_trip() -> None:
    cfg = RulConfig(n_sensors=3, window=10, channels=(4, 5))
    assert RulConfig.from_json(cfg.to_json()) == cfg
    acfg = AutoencoderConfig(n_sensors=3, window=9)
    assert AutoencoderConfig.from_json(acfg.to_json()) == acfg
