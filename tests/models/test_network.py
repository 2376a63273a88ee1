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
        window=FD001_CONFIG.window,
        channels=FD001_CONFIG.channels,
        kernel=FD001_CONFIG.kernel,
        squeeze=FD001_CONFIG.squeeze,
        hidden=FD001_CONFIG.hidden,
        dilations=FD001_CONFIG.dilations,
        stride=FD001_CONFIG.stride,
    )
    model = RulCNN(cfg).eval()
    assert model(torch.zeros(5, 14, FD001_CONFIG.window)).shape == (5,)
    assert count_parameters(model) <= MAX_PARAMETERS


def test_a_strided_first_convolution_reads_a_long_window_at_a_lower_rate() -> None:
    for window, stride in ((80, 2), (81, 2), (120, 3), (30, 1)):
        cfg = RulConfig(n_sensors=14, window=window, channels=(16, 16), stride=stride)
        assert cfg.steps == -(-window // stride)
        assert RulCNN(cfg).eval()(torch.zeros(2, 14, window)).shape == (2,)
        again = RulConfig.from_json(cfg.to_json())
        assert again == cfg and ("stride" in cfg.to_json()) == (stride > 1)


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
