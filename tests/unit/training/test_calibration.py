"""Platt scaling folded into the head: calibrated probabilities, the same order of studies."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.model import NetConfig, NormalFilterNet, calibrate_head


def test_the_head_is_rescaled_so_that_probabilities_match_the_labels():
    torch.manual_seed(0)
    model = NormalFilterNet(NetConfig(init_features=8, growth_rate=4, block_config=(2, 2))).eval()
    rng = np.random.default_rng(0)
    labels = torch.from_numpy((rng.random(4000) < 0.25).astype(np.float32))
    true_logit = torch.from_numpy(rng.normal(0, 1, 4000).astype(np.float32)) + 3 * (labels - 0.5)
    skewed = 3.0 * true_logit + 2.0  # over-confident and shifted, as class weighting leaves it
    weight, bias = model.head.weight.detach().clone(), model.head.bias.detach().clone()
    a, b = calibrate_head(model, skewed, labels)
    assert a < 1.0  # it shrinks the over-confident logits
    calibrated = torch.sigmoid(a * skewed + b)
    assert abs(float(calibrated.mean()) - float(labels.mean())) < 0.01
    assert a > 0  # monotonic: AUROC and the order of studies do not change
    # folded into the head: the network itself now outputs the calibrated logit
    assert torch.allclose(model.head.weight, a * weight) and torch.allclose(model.head.bias, a * bias + b)
