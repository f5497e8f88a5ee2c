"""Helpers shared by the multi-layer SCA tests of the ResNet and VGG encoders."""

import torch

from captioning.models.attention.multilayer import MultiLayerSCA
from captioning.models.encoder import Encoder


def with_random_bn_statistics(encoder: Encoder) -> Encoder:
    """Gives every BN layer non-trivial running statistics, so that the frozen-BN recomputation is really exercised."""
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return encoder


def make_uniform(sca: MultiLayerSCA) -> None:
    """Zeroes every score layer: softmax then gives uniform spatial and channel weights."""
    for layer in sca.layers:
        for part in (layer.channel, layer.spatial):
            if part is not None:
                torch.nn.init.zeros_(part.score.weight)
                torch.nn.init.zeros_(part.score.bias)


def assert_each_sample_independent(encoder: Encoder, sca: MultiLayerSCA, images: torch.Tensor, hidden: torch.Tensor):
    """A batch's context and weights equal each sample's run alone: images (B, 3, H, W), hidden (B, D)."""
    with torch.no_grad():
        batched, weights = sca(sca.prepare(encoder, images), hidden, encoder)
        for i in range(images.shape[0]):
            alone, single = sca(sca.prepare(encoder, images[i : i + 1]), hidden[i : i + 1], encoder)
            torch.testing.assert_close(batched[i : i + 1], alone)
            for name in weights:
                torch.testing.assert_close(weights[name][i : i + 1], single[name])
