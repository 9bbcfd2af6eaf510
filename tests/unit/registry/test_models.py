"""Model checks and parameter helpers of the registry that need no MLflow server."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.model import NetConfig, NormalFilterNet
from pipeline.registry import InvalidModel, check_model_outputs, flat_params, input_example, params_digest

TINY = NetConfig(init_features=8, growth_rate=4, block_config=(2, 2))


class TwoLogits(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)).repeat(1, 2)  # (N, 2): a two-class head, not a normal filter


def test_a_normal_filter_passes_and_returns_one_logit_per_image() -> None:
    torch.manual_seed(0)
    logits = check_model_outputs(NormalFilterNet(TINY), 32)
    assert logits.shape == (2,)


def test_a_model_with_the_wrong_output_shape_is_refused() -> None:
    with pytest.raises(InvalidModel, match=r"returns \(2, 2\).*one logit per image"):
        check_model_outputs(TwoLogits(), 32)


def test_input_example_is_seeded_and_shaped_like_the_input() -> None:
    a, b = input_example(32), input_example(32)
    assert a.shape == (1, 1, 32, 32) and a.dtype.name == "float32" and (a == b).all()


def test_params_flatten_to_dotted_strings_and_digest_is_order_free() -> None:
    params = {"epochs": 2, "net": {"growth_rate": 4, "block_config": (2, 2)}}
    assert flat_params(params) == {"epochs": "2", "net.growth_rate": "4", "net.block_config": "(2, 2)"}
    assert params_digest({"a": 1, "b": 2}) == params_digest({"b": 2, "a": 1})
