"""SCA-CNN spatial and channel-wise attention on one feature map, conditioned on the decoder state h_{t-1}.

Chen et al., "SCA-CNN: Spatial and Channel-wise Attention in Convolutional Networks for Image Captioning",
CVPR 2017, arXiv 1611.05594, section 3 (eq. 1-8, as the official code computes them). For V (C x m), m = H*W
locations, and (+) adding a vector to every column:

    spatial:  a     = tanh((W_s V + b_s) (+) W_hs h_{t-1})          (k x m)
              alpha = softmax(W_i a + b_i)                          (m, over locations)
    channel:  v     = mean_i V_i                                    (C, the spatially pooled map)
              b     = tanh((w_c (x) v + b_c) (+) W_hc h_{t-1})      (k x C, w_c a k-vector, (x) the outer product)
              beta  = softmax(W'_i b + b'_i)                        (C, over channels)
    attended: X_{i,c} = alpha_i * beta_c * V_{i,c}

Orders: ``cs`` (the paper's best) computes beta from V, then alpha from the channel-weighted map; ``sc`` computes
alpha from V, then beta from the location-weighted map; ``c`` and ``s`` use one of them. As in the official code,
each product is rescaled by the number of elements its weights average over (x C after channel attention, x m after
spatial attention), so uniform weights give back V. Deviation from the official code: it adds the bias b_i inside
the dot product in the res5c spatial attention (a bug); we use W_i a + b_i everywhere, as the paper does.

Everything is recomputed per call from (features, hidden); nothing is stored on the module between time steps.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Order = Literal["cs", "sc", "c", "s"]
ORDERS: tuple[Order, ...] = ("cs", "sc", "c", "s")


class SpatialSCA(nn.Module):
    """Spatial attention alpha over the m = H*W locations (SCA-CNN eq. 4-5).

    Args:
        channels: feature channels C.
        hidden_dim: decoder hidden size D.
        attn_dim: attention size k (512 in the official code).
    """

    def __init__(self, channels: int, hidden_dim: int, *, attn_dim: int = 512) -> None:
        super().__init__()
        self.feature_proj = nn.Linear(channels, attn_dim)  # W_s, b_s, applied per location
        self.hidden_proj = nn.Linear(hidden_dim, attn_dim, bias=False)  # W_hs (b_s is the only bias)
        self.score = nn.Linear(attn_dim, 1)  # W_i, b_i (b_i outside the dot product, unlike the official res5c)

    def forward(self, features: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """features V (B, C, H, W), h_{t-1} (B, D) -> alphas (B, H*W), summing to 1 over locations."""
        grid = features.flatten(2).transpose(1, 2)  # (B, N, C)
        energy = torch.tanh(self.feature_proj(grid) + self.hidden_proj(hidden)[:, None, :])  # (B, N, k)
        return torch.softmax(self.score(energy).squeeze(-1), dim=1)  # (B, N): over locations, never the batch


class ChannelSCA(nn.Module):
    """Channel-wise attention beta over the C channels of the spatially pooled map (SCA-CNN eq. 6-7).

    Args:
        channels: feature channels C.
        hidden_dim: decoder hidden size D.
        attn_dim: attention size k (512 in the official code).
    """

    def __init__(self, channels: int, hidden_dim: int, *, attn_dim: int = 512) -> None:
        super().__init__()
        self.feature_weight = nn.Parameter(torch.empty(attn_dim))  # w_c: outer product with v gives k x C
        self.feature_bias = nn.Parameter(torch.empty(attn_dim))  # b_c
        self.hidden_proj = nn.Linear(hidden_dim, attn_dim, bias=False)  # W_hc
        self.score = nn.Linear(attn_dim, 1)  # W'_i, b'_i
        # w_c (x) v + b_c is nn.Linear(1, k) applied to each v_c; use that layer's init (fan_in = 1: U(-1, 1)).
        nn.init.uniform_(self.feature_weight, -1.0, 1.0)
        nn.init.uniform_(self.feature_bias, -1.0, 1.0)

    def forward(self, features: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """features V (B, C, H, W), h_{t-1} (B, D) -> betas (B, C), summing to 1 over channels."""
        pooled = features.mean(dim=(2, 3))  # (B, C)
        shift = F.linear(hidden, self.hidden_proj.weight, self.feature_bias)  # b_c (+) W_hc h_{t-1}: (B, k)
        scores = channel_scores(pooled, self.feature_weight, shift, self.score.weight[0])  # (B, C)
        return torch.softmax(scores + self.score.bias, dim=1)  # (B, C): over channels, never the batch


BLOCK_ELEMENTS = 1 << 16  # floats per (B, c, k) block without gradients: 256 KiB, an L2 cache's share


def channel_scores(
    pooled: torch.Tensor,
    weight: torch.Tensor,
    shift: torch.Tensor,
    score: torch.Tensor,
    *,
    block_elements: int = BLOCK_ELEMENTS,
) -> torch.Tensor:
    """s_{b,c} = sum_k u_k tanh(v_{b,c} w_k + e_{b,k}), the channel attention's energies (SCA-CNN eq. 6-7, W'_i = u).

    The time and memory hot spot of SCA-CNN: the tanh tensor is (B, C, k) per step and attended layer (64 x 2048 x
    512 floats for res5c, with the official code's k = 512). Two exact rewrites make it cheaper than the plain
    expression under autograd (about twenty passes over such tensors, from broadcast products, sums and their
    gradients, and ``tanh_backward``):

    - tanh z = 2 sigmoid(2z) - 1, so s = 2 sigmoid(2 v w + 2 e) @ u - sum_k u_k. On this machine's CPU (AVX2)
      ``torch.sigmoid`` runs 3x faster than ``torch.tanh``, and the only (B, C, k) pass that is not a product or a
      sum is that transcendental function. The derivative is 1 - tanh^2 z = 4 S (1 - S) with S = sigmoid(2z).
    - The backward pass is written out (:class:`_ChannelScores`): it keeps S alone and forms every gradient from
      S and S (1 - S) with matrix products (four passes over (B, C, k) instead of about ten).

    Without gradients (decoding), :func:`_blocked_channel_scores` goes over blocks of channels so that each (B, c, k)
    block stays in the CPU's cache and is never allocated at full size (on this machine, 87 ms -> 29 ms a call at
    the ResNet-50 benchmark's size, 16 x 2048 x 512, against the previous fused tanh form; with gradients 175 ->
    127 ms forward and backward). ``torch.compile`` would fuse this too, but needs a C++ toolchain and a compile per
    shape at run time.

    Under mixed precision (autocast, ``bf16-mixed``) the energies are computed in float32, like autocast's own
    reductions: the sum over k of about 512 terms per channel, and the backward pass's matrix products, need it.

    Args:
        pooled: v, (B, C). weight: w_c, (k,). shift: b_c + W_hc h_{t-1}, (B, k). score: u = W'_i, (k,).
        block_elements: floats per (B, c, k) block on the CPU without gradients.
    """
    with torch.autocast(pooled.device.type, enabled=False):
        # differentiable casts of bf16/fp16 inputs to float32 (float64 stays float64)
        args = [t if t.dtype in (torch.float32, torch.float64) else t.float() for t in (pooled, weight, shift, score)]
        if torch.is_grad_enabled() and any(t.requires_grad for t in args):
            return _ChannelScores.apply(*args)  # (B, C)
        return _blocked_channel_scores(*args, block_elements=block_elements)  # (B, C)


def _blocked_channel_scores(
    pooled: torch.Tensor, weight: torch.Tensor, shift: torch.Tensor, score: torch.Tensor, *, block_elements: int
) -> torch.Tensor:
    """:func:`channel_scores` without autograd, over blocks of channels (each row and channel as in the full form)."""
    rows, channels = pooled.shape
    twice_weight, twice_shift, twice_score = 2 * weight, 2 * shift, 2 * score  # (k,), (B, k), (k,)
    out = torch.empty_like(pooled)  # (B, C)
    # channels per block; one block on an accelerator, where small blocks would only add kernel launches
    block = max(1, block_elements // (rows * weight.numel())) if pooled.device.type == "cpu" else channels
    for start in range(0, channels, block):  # a loop over channel blocks, never over rows
        part = pooled[:, start : start + block]  # (B, c)
        squashed = _squash(part, twice_weight, twice_shift)  # S = sigmoid(2z): (B, c, k)
        out[:, start : start + block] = squashed @ twice_score  # (B, c)
    return out - score.sum()  # 2 S u - sum(u) = tanh(z) u


def _squash(pooled: torch.Tensor, twice_weight: torch.Tensor, twice_shift: torch.Tensor) -> torch.Tensor:
    """S = sigmoid(2z), z_{b,c,k} = v_{b,c} w_k + e_{b,k}, from v (B, c), 2w (k,) and 2e (B, k) -> (B, c, k).
    The caller doubles w and e (once, outside a loop over blocks). A product, then in-place sum and sigmoid: the
    broadcasting ``addcmul`` that computes the same in one call ran 3-4x slower on this machine's CPU (its kernel
    is not vectorized over broadcast operands)."""
    return (pooled[:, :, None] * twice_weight).add_(twice_shift[:, None, :]).sigmoid_()


class _ChannelScores(torch.autograd.Function):
    """:func:`channel_scores` with its backward written out from S = sigmoid(2z), the one (B, C, k) tensor kept."""

    @staticmethod
    def forward(ctx, pooled, weight, shift, score):  # (B, C), (k,), (B, k), (k,)
        squashed = _squash(pooled, 2 * weight, 2 * shift)  # S = sigmoid(2z): (B, C, k)
        ctx.save_for_backward(pooled, weight, score, squashed)
        return squashed @ (2 * score) - score.sum()  # tanh(z) u = 2 S u - sum(u): (B, C)

    @staticmethod
    def backward(ctx, grad):  # grad: g = dL/ds, (B, C)
        pooled, weight, score, squashed = ctx.saved_tensors
        # dL/du_k = sum_{b,c} g_{b,c} tanh z_{b,c,k} = 2 sum_{b,c} g_{b,c} S_{b,c,k} - sum_{b,c} g_{b,c}
        grad_score = 2 * torch.bmm(grad[:, None, :], squashed).sum(dim=(0, 1)) - grad.sum()  # (k,)
        slope = torch.addcmul(squashed, squashed, squashed, value=-1)  # S (1 - S) = (1 - tanh^2 z) / 4: (B, C, k)
        # dL/dz_{b,c,k} = 4 g_{b,c} u_k S(1 - S); v, w and e enter z as v_{b,c} w_k + e_{b,k}:
        grad_pooled = 4 * grad * (slope @ (score * weight))  # sum_k dz w_k: (B, C)
        # sum_c g S(1 - S) and sum_c g v S(1 - S), for e and w: (B, 2, k)
        sums = torch.bmm(torch.stack([grad, grad * pooled], dim=1), slope)
        grad_shift = 4 * score * sums[:, 0]  # (B, k)
        grad_weight = 4 * score * sums[:, 1].sum(dim=0)  # (k,)
        return grad_pooled, grad_weight, grad_shift, grad_score


class SCAttention(nn.Module):
    """SCA-CNN attention on one feature map: X = alpha * beta * V in the chosen order (see the module docstring).

    Args:
        channels: feature channels C.
        hidden_dim: decoder hidden size D.
        attn_dim: attention size k (512 in the official code).
        order: ``cs`` (channel, then spatial on the channel-weighted map), ``sc``, ``c`` or ``s``.
        rescale: multiply each product by the number of elements its weights average over (x C after channel
            attention, x m after spatial), as the official code does (github.com/zjuchenlong/sca-cnn.cvpr17), so the
            attended map keeps V's mean magnitude and uniform weights return V.

    Raises:
        ValueError: on an unknown ``order``.
    """

    def __init__(
        self,
        channels: int,
        hidden_dim: int,
        *,
        attn_dim: int = 512,
        order: Order = "cs",
        rescale: bool = True,
    ) -> None:
        super().__init__()
        if order not in ORDERS:
            raise ValueError(f"unknown SCA order {order!r}; choose one of {', '.join(ORDERS)}")
        self.order = order
        self.rescale = rescale
        self.channel = ChannelSCA(channels, hidden_dim, attn_dim=attn_dim) if "c" in order else None
        self.spatial = SpatialSCA(channels, hidden_dim, attn_dim=attn_dim) if "s" in order else None

    def _attend_channels(self, features: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.channel is not None
        betas = self.channel(features, hidden)  # (B, C)
        scale = features.shape[1] if self.rescale else 1  # x C: beta averages over C channels
        return features * (betas * scale)[:, :, None, None], betas  # (B, C, H, W)

    def _attend_locations(self, features: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.spatial is not None
        alphas = self.spatial(features, hidden)  # (B, N)
        scale = alphas.shape[1] if self.rescale else 1  # x m: alpha averages over m = H*W locations
        return features * (alphas * scale).view_as(features[:, :1]), alphas  # (B, 1, H, W) weights -> (B, C, H, W)

    def forward(
        self, features: torch.Tensor, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """features V (B, C, H, W), h_{t-1} (B, D) -> attended X (B, C, H, W), alphas (B, H*W), betas (B, C).

        ``alphas`` is None for order ``c`` and ``betas`` is None for order ``s``.
        """
        alphas = betas = None
        attended = features
        for step in self.order:  # "cs": channel first, the spatial attention sees the channel-weighted map
            if step == "c":
                attended, betas = self._attend_channels(attended, hidden)
            else:
                attended, alphas = self._attend_locations(attended, hidden)
        return attended, alphas, betas


def sca_attention(order: str, channels: int, hidden_dim: int, *, attn_dim: int = 512) -> SCAttention:
    """Registry of SCA-CNN attention by order: ``cs``, ``sc``, ``c`` (channel only), ``s`` (spatial only).

    Raises:
        ValueError: on an unknown ``order``, listing the valid ones.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown SCA order {order!r}; choose one of {', '.join(ORDERS)}")
    return SCAttention(channels, hidden_dim, attn_dim=attn_dim, order=order)
