"""The normal-filter network: a MONAI DenseNet with a probability head and an embedding.

Shapes: input (N, 1, H, W) float32, normalised per image; ``forward`` returns logits (N,);
``embed`` returns the penultimate-layer features (N, D), the vector the inference service logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from monai.networks.nets import DenseNet, DenseNet121
from torch import nn


@dataclass(frozen=True)
class NetConfig:
    """Which network to build.

    Args:
        name: ``"densenet_small"`` (CPU-sized, for 64-256 px) or ``"densenet121"`` (GPU, 512 px and up).
        init_features: channels after the stem (densenet_small only).
        growth_rate: channels each dense layer adds (densenet_small only).
        block_config: dense layers per block (densenet_small only).
        dropout_prob: dropout inside dense layers; also what MC-dropout samples at inference.
    """

    name: str = "densenet_small"
    init_features: int = 32
    growth_rate: int = 8
    block_config: tuple[int, ...] = (4, 4, 4)
    dropout_prob: float = 0.1


class NormalFilterNet(nn.Module):
    """Binary classifier (abnormal vs normal) over single-channel radiographs."""

    def __init__(self, config: NetConfig | None = None) -> None:
        super().__init__()
        config = config or NetConfig()
        self.config = config
        if config.name == "densenet121":
            net: DenseNet = DenseNet121(spatial_dims=2, in_channels=1, out_channels=1, dropout_prob=config.dropout_prob)
        elif config.name == "densenet_small":
            net = DenseNet(
                spatial_dims=2,
                in_channels=1,
                out_channels=1,
                init_features=config.init_features,
                growth_rate=config.growth_rate,
                block_config=config.block_config,
                dropout_prob=config.dropout_prob,
            )
        else:
            raise ValueError(f"unknown network {config.name!r}: use densenet_small or densenet121")
        self.features: nn.Module = net.features
        self.pool = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cast(nn.Linear, net.class_layers.out).in_features, 1)

    @property
    def embedding_dim(self) -> int:
        return int(self.head.in_features)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Return the penultimate-layer features, shape (N, D)."""
        return self.pool(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logit of "abnormal", shape (N,)."""
        return self.head(self.embed(x)).squeeze(1)

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits (N,), embeddings (N, D)) from one pass."""
        embedding = self.embed(x)
        return self.head(embedding).squeeze(1), embedding


@torch.no_grad()
def calibrate_head(
    model: NormalFilterNet, logits: torch.Tensor, labels: torch.Tensor, *, steps: int = 200
) -> tuple[float, float]:
    """Fit Platt scaling ``a * logit + b`` on held-out ``logits`` and fold it into the head; return (a, b).

    Class weighting during training leaves the probabilities calibrated at another prevalence; the
    label-free performance estimate and the prevalence estimate of monitoring need them calibrated
    at the data's. The scaling is monotonic, so AUROC and the order of studies do not change.
    """
    a = torch.ones((), requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    x, y = logits.detach().float(), labels.detach().float()
    with torch.enable_grad():
        optimiser = torch.optim.LBFGS([a, b], max_iter=steps, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimiser.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(a * x + b, y)
            loss.backward()
            return loss

        optimiser.step(closure)
    scale, shift = float(a), float(b)
    head = model.head
    head.weight.mul_(scale)
    head.bias.mul_(scale).add_(shift)
    return scale, shift


def enable_mc_dropout(model: nn.Module) -> None:
    """Put every dropout layer of ``model`` in training mode (the rest stays in eval) for MC-dropout sampling."""
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.Dropout | nn.Dropout2d):
            module.train()
