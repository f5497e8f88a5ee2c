"""SCA-CNN attention on one feature map (captioning.models.attention.sca)."""

import pytest
import torch
from torch import nn

from captioning.models.attention.sca import ChannelSCA, SCAttention, SpatialSCA, channel_scores, sca_attention

B, C, H, W, D, K = 4, 8, 3, 3, 5, 6
ORDERS = ["cs", "sc", "c", "s"]


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, H, W, generator=g), torch.randn(B, D, generator=g)


def build(order: str) -> SCAttention:
    torch.manual_seed(0)
    return sca_attention(order, C, D, attn_dim=K)


@pytest.mark.parametrize("order", ORDERS)
def test_shapes_and_weights_are_distributions(order: str) -> None:
    features, hidden = inputs()
    attended, alphas, betas = build(order)(features, hidden)
    assert attended.shape == (B, C, H, W)
    assert (alphas is None) == (order == "c")
    assert (betas is None) == (order == "s")
    for weights, size in ((alphas, H * W), (betas, C)):
        if weights is not None:
            assert weights.shape == (B, size)
            assert (weights >= 0).all()
            torch.testing.assert_close(weights.sum(dim=1), torch.ones(B))


@pytest.mark.parametrize("module", [SpatialSCA(C, D, attn_dim=K), ChannelSCA(C, D, attn_dim=K)])
def test_submodules_normalize_per_sample(module: nn.Module) -> None:
    features, hidden = inputs()
    weights = module(features, hidden)
    assert weights.shape == (B, H * W if isinstance(module, SpatialSCA) else C)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(B))


@pytest.mark.parametrize("order", ORDERS)
def test_batch_independence(order: str) -> None:
    model = build(order)
    features, hidden = inputs()
    batched = model(features, hidden)
    for row in range(B):
        single = model(features[row : row + 1], hidden[row : row + 1])
        for full, one in zip(batched, single, strict=True):
            if full is not None:
                torch.testing.assert_close(full[row : row + 1], one)


@pytest.mark.parametrize("order", ORDERS)
def test_uniform_weights_with_rescale_return_features(order: str) -> None:
    model = build(order)
    with torch.no_grad():
        for sub in (model.channel, model.spatial):
            if sub is not None:
                sub.score.weight.zero_()
                sub.score.bias.zero_()
    features, hidden = inputs()
    attended, alphas, betas = model(features, hidden)
    if alphas is not None:
        torch.testing.assert_close(alphas, torch.full((B, H * W), 1 / (H * W)))
    if betas is not None:
        torch.testing.assert_close(betas, torch.full((B, C), 1 / C))
    torch.testing.assert_close(attended, features)


def test_without_rescale_uniform_weights_shrink_features() -> None:
    torch.manual_seed(0)
    model = SCAttention(C, D, attn_dim=K, order="cs", rescale=False)
    with torch.no_grad():
        for sub in (model.channel, model.spatial):
            assert sub is not None
            sub.score.weight.zero_()
            sub.score.bias.zero_()
    features, hidden = inputs()
    torch.testing.assert_close(model(features, hidden)[0], features / (C * H * W))


@pytest.mark.parametrize("order", ORDERS)
def test_gradients_reach_parameters_and_inputs(order: str) -> None:
    model = build(order)
    names = [name for name, _ in model.named_parameters()]
    assert any(name.startswith("channel.") for name in names) == ("c" in order)
    assert any(name.startswith("spatial.") for name in names) == ("s" in order)
    features, hidden = inputs()
    features.requires_grad_(True)
    hidden.requires_grad_(True)
    attended, _, _ = model(features, hidden)
    (attended * torch.randn(attended.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    for name, tensor in [*model.named_parameters(), ("features", features), ("hidden", hidden)]:
        assert tensor.grad is not None, name
        assert torch.isfinite(tensor.grad).all(), name
        if name.endswith("score.bias"):  # b_i shifts every logit alike: softmax is invariant, its gradient is 0
            torch.testing.assert_close(tensor.grad, torch.zeros_like(tensor.grad))
        else:
            assert tensor.grad.abs().sum() > 0, name


def test_cs_and_sc_differ_with_the_same_parameters() -> None:
    cs, sc = build("cs"), sca_attention("sc", C, D, attn_dim=K)
    sc.load_state_dict(cs.state_dict())
    features, hidden = inputs()
    attended_cs, _, _ = cs(features, hidden)
    attended_sc, _, _ = sc(features, hidden)
    assert not torch.allclose(attended_cs, attended_sc)


@pytest.mark.parametrize("order", ORDERS)
def test_hidden_state_changes_the_weights(order: str) -> None:
    model = build(order)
    features, hidden = inputs()
    _, alphas, betas = model(features, hidden)
    _, other_alphas, other_betas = model(features, inputs(seed=1)[1])
    for weights, other in ((alphas, other_alphas), (betas, other_betas)):
        if weights is not None:
            assert other is not None
            assert not torch.allclose(weights, other)


@pytest.mark.parametrize("order", ORDERS)
def test_repeated_calls_are_identical(order: str) -> None:
    model = build(order)
    features, hidden = inputs()
    state = {name: value.clone() for name, value in model.state_dict().items()}
    first, second = model(features, hidden), model(features, hidden)
    for a, b in zip(first, second, strict=True):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, state[name], rtol=0, atol=0)


def test_unknown_order_raises() -> None:
    with pytest.raises(ValueError, match="cs, sc, c, s"):
        sca_attention("spatial", C, D, attn_dim=K)
    with pytest.raises(ValueError, match="unknown SCA order"):
        SCAttention(C, D, order="x")  # type: ignore[arg-type]


def plain_channel_scores(pooled, weight, shift, score):
    """SCA-CNN eq. 6-7 as written: sum_k u_k tanh(v_c w_k + e_k), (B, C, k) under plain autograd."""
    return torch.tanh(pooled[:, :, None] * weight + shift[:, None, :]) @ score  # (B, C)


def channel_inputs(rows: int, channels: int, k: int, dtype=torch.float64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    shapes = [(rows, channels), (k,), (rows, k), (k,)]
    return [torch.randn(shape, generator=g, dtype=dtype).requires_grad_() for shape in shapes]


def test_fused_channel_scores_equal_the_equation_with_its_gradients() -> None:
    """The sigmoid rewrite and the hand-written backward pass against eq. 6-7 as written, in float64."""
    args = channel_inputs(3, 5, 4)
    torch.testing.assert_close(channel_scores(*args), plain_channel_scores(*args), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(channel_scores, args)
    upstream = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    fused = torch.autograd.grad(channel_scores(*args), args, upstream)
    plain = torch.autograd.grad(plain_channel_scores(*args), args, upstream)
    for name, a, b in zip(("pooled", "weight", "shift", "score"), fused, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("block_elements", [1, 7 * 4 * 3, 1 << 16])  # one channel per block, uneven blocks, one block
def test_channel_scores_without_gradients_go_over_blocks_of_channels(block_elements: int) -> None:
    """Decoding's path (no autograd, blocks of channels) equals the training path, for any block size."""
    args = channel_inputs(7, 10, 4, dtype=torch.float32)
    with_grad = channel_scores(*args)
    assert with_grad.grad_fn is not None
    with torch.no_grad():
        blocked = channel_scores(*args, block_elements=block_elements)
    torch.testing.assert_close(blocked, with_grad.detach(), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(blocked, plain_channel_scores(*args).detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("order", ORDERS)
def test_bf16_autocast_trains_and_decodes(order: str) -> None:
    """Under bf16 mixed precision (``configs/trainer/bf16.yaml``) the attention runs forward and backward; the
    channel energies are computed in float32 and match the float32 run to bf16's precision."""
    model = build(order)
    features, hidden = inputs()
    reference, ref_alphas, ref_betas = model(features, hidden)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attended, alphas, betas = model(features, hidden)
        with torch.no_grad():
            decoded, _, _ = model(features, hidden)
    attended.float().square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    for ours, theirs in ((alphas, ref_alphas), (betas, ref_betas), (decoded, reference)):
        if theirs is not None:
            torch.testing.assert_close(ours.float(), theirs.detach(), rtol=0.05, atol=0.02)
