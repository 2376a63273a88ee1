"""The two networks edgewatch runs on a gateway: plain ``nn.Module``s, no training logic.

Both read a window batch shaped ``(batch, sensors, time)`` of *scaled* values (scaling
lives in :mod:`models.preprocessing` and travels in the bundle manifest). Each network
carries a small frozen config that a bundle stores as JSON, so that a checkpoint can
rebuild its own module before loading weights (no pickle).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

#: Issue 4: every shipped network must stay within this many parameters.
MAX_PARAMETERS = 100_000


@dataclass(frozen=True)
class RulConfig:
    """Shape of a :class:`RulCNN`.

    ``channels`` lists the output channels of the stacked "same" convolutions; the last
    feature map is squeezed to ``squeeze`` channels before flattening so that the dense
    head stays small while still seeing *where* in the window a change happened (a
    global pool would throw that away, and recency matters for RUL).
    """

    n_sensors: int
    window: int
    channels: tuple[int, ...] = (32, 32, 32)
    kernel: int = 5
    squeeze: int = 8
    hidden: int = 64
    dropout: float = 0.2
    #: Dilation of each convolution (empty: 1 everywhere). Growing dilations (1, 2, 4)
    #: see the whole window with few layers and keep the "same" length.
    dilations: tuple[int, ...] = ()
    #: Stride of the first convolution: a long window read at half the time resolution
    #: costs what a short one does (sensor noise is averaged over cycles anyway).
    stride: int = 1

    def __post_init__(self) -> None:
        if self.dilations and len(self.dilations) != len(self.channels):
            raise ValueError("give one dilation per convolution (or none)")
        if self.stride < 1:
            raise ValueError("stride must be >= 1")

    @property
    def steps(self) -> int:
        """Time steps after the first convolution (the others keep the length)."""
        pad = self.dilation(0) * (self.kernel // 2)
        return (self.window + 2 * pad - self.dilation(0) * (self.kernel - 1) - 1) // self.stride + 1

    def dilation(self, layer: int) -> int:
        return self.dilations[layer] if self.dilations else 1

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        if self.dilations:
            d["dilations"] = list(self.dilations)
        else:
            del d["dilations"]  # the manifests of networks that never had them
        if self.stride == 1:
            del d["stride"]
        return d

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> RulConfig:
        d = dict(obj)
        d["channels"] = tuple(int(c) for c in d.get("channels", ()))
        d["dilations"] = tuple(int(c) for c in d.get("dilations", ()))
        return cls(**d)


class RulCNN(nn.Module):
    """Remaining-useful-life regressor.

    Input ``(batch, n_sensors, window)`` float32, scaled. Output ``(batch,)``: RUL in the
    training data's unit (cycles for C-MAPSS), unclipped (clip at the cap if wanted).
    """

    def __init__(self, config: RulConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = config.n_sensors
        for i, c_out in enumerate(config.channels):
            d = config.dilation(i)
            pad = d * (config.kernel // 2)
            stride = config.stride if i == 0 else 1
            conv = nn.Conv1d(c_in, c_out, config.kernel, stride=stride, padding=pad, dilation=d)
            layers += [conv, nn.ReLU()]
            c_in = c_out
        layers += [nn.Conv1d(c_in, config.squeeze, 1), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(config.squeeze * config.steps, config.hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, S, W)`` -> ``(B,)``."""
        out: torch.Tensor = self.head(self.features(x))
        return out.squeeze(-1)


@dataclass(frozen=True)
class AutoencoderConfig:
    """Shape of a :class:`ConvAutoencoder`.

    ``latent`` is a real bottleneck (a dense code): without it a convolutional
    autoencoder can learn a near-identity map that reconstructs faults as well as
    healthy data, which makes reconstruction error useless as an anomaly score.
    """

    n_sensors: int
    window: int
    channels: tuple[int, int] = (32, 16)
    kernel: int = 5
    latent: int = 16

    @property
    def reduced(self) -> int:
        """Time steps after the stride-2 encoder convolution."""
        return (self.window + 1) // 2

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> AutoencoderConfig:
        d = dict(obj)
        ch = tuple(int(c) for c in d.get("channels", (32, 16)))
        if len(ch) != 2:
            raise ValueError("autoencoder channels must have two entries")
        d["channels"] = (ch[0], ch[1])
        return cls(**d)


class ConvAutoencoder(nn.Module):
    """1D convolutional autoencoder for anomaly scoring.

    Input and output ``(batch, n_sensors, window)`` float32, scaled. The anomaly score
    is the reconstruction error (see :func:`reconstruction_error`).
    """

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        c1, c2 = config.channels
        k, pad = config.kernel, config.kernel // 2
        self.encoder = nn.Sequential(
            nn.Conv1d(config.n_sensors, c1, k, padding=pad),
            nn.ReLU(),
            nn.Conv1d(c1, c2, k, stride=2, padding=pad),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c2 * config.reduced, config.latent),
        )
        self.expand = nn.Linear(config.latent, c2 * config.reduced)
        self.decoder = nn.Sequential(
            nn.Conv1d(c2, c1, k, padding=pad),
            nn.ReLU(),
            nn.Conv1d(c1, config.n_sensors, k, padding=pad),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, S, W)`` -> ``(B, S, W)``."""
        c2 = self.config.channels[1]
        z = self.encoder(x)
        h = F.relu(self.expand(z)).view(x.shape[0], c2, self.config.reduced)
        # Nearest upsampling back to the exact window length works for odd windows too,
        # where a transposed convolution would need output_padding bookkeeping.
        h = F.interpolate(h, size=self.config.window, mode="nearest")
        out: torch.Tensor = self.decoder(h)
        return out


def reconstruction_error(
    model: nn.Module, x: torch.Tensor, steps: int | None = None
) -> torch.Tensor:
    """Mean squared reconstruction error per window: ``(B, S, W)`` -> ``(B,)``.

    ``steps`` limits the mean to the window's newest time steps (all sensors): the
    earlier steps still give the network its context, but a change shows in the score
    as soon as it reaches the newest samples and leaves it as soon as they are healthy
    again, instead of lingering until it has slid out of the whole window.
    """
    recon: torch.Tensor = model(x)
    err = (recon - x).pow(2)
    if steps is not None:
        err = err[:, :, -steps:]
    return err.mean(dim=(1, 2))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def seed_everything(seed: int) -> None:
    """Make CPU training repeatable: same seed, same data -> same weights and metrics."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
