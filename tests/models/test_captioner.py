"""The captioner: shapes, gradients, the loss mask, and decoding (beam search, greedy) on tiny tensors."""

from copy import deepcopy

import pytest
import torch
from conftest import WORDS, tiny_batch, tiny_module

from captioning.models.loss import caption_loss


@pytest.mark.parametrize("attention", ["none", "soft", "sca"])
def test_forward_shapes_and_attention_normalized(attention):
    module = tiny_module(attention)
    batch = tiny_batch()
    logits, weights = module.captioner(batch.images, batch.tokens[:, :-1])
    assert logits.shape == (2, 6, len(WORDS))
    if attention == "none":
        assert weights == {}
        return
    spatial = [w for name, w in weights.items() if name.startswith("alpha")]
    assert spatial and all(alphas.shape == (2, 6, 4) for alphas in spatial)  # 64 px / 32 = 2 x 2 locations
    for alphas in spatial:
        torch.testing.assert_close(alphas.sum(-1), torch.ones(2, 6))  # softmax over locations, per image and step


@pytest.mark.parametrize("attention", ["none", "soft", "sca"])
def test_every_parameter_gets_a_gradient(attention):
    module = tiny_module(attention)
    module.loss(tiny_batch(4))["loss"].backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(p.grad.abs().sum() > 0 for n, p in module.named_parameters() if "attention." in n and "decoder" in n)


def test_loss_ignores_padding():
    g = torch.Generator().manual_seed(0)
    logits, alphas = torch.randn(2, 6, 11, generator=g), torch.rand(2, 6, 4, generator=g).softmax(-1)
    targets = tiny_batch().tokens[:, 1:]  # the second caption is padded from position 4
    pad = targets == 0
    assert pad.any()
    loss = caption_loss(logits, [alphas], targets, pad=0, attention_reg=1.0)
    noisy_logits = torch.where(pad[..., None], torch.randn(2, 6, 11, generator=g) * 10, logits)
    noisy_alphas = torch.where(pad[..., None], torch.rand(2, 6, 4, generator=g), alphas)
    noisy = caption_loss(noisy_logits, [noisy_alphas], targets, pad=0, attention_reg=1.0)
    for key in ("loss", "xe", "attention_reg"):
        torch.testing.assert_close(noisy[key], loss[key])
    # a change at a real (non-pad) position does change it
    logits[0, 0, targets[0, 0]] += 5.0
    assert not torch.allclose(caption_loss(logits, [alphas], targets, pad=0, attention_reg=1.0)["xe"], loss["xe"])


def test_pad_positions_do_not_change_the_loss(module):
    module.eval()
    batch = tiny_batch()
    reference = module.loss(batch)["loss"]
    longer = torch.cat([batch.tokens, torch.zeros(2, 3, dtype=torch.long)], dim=1)  # extra padding columns
    batch.tokens = longer
    torch.testing.assert_close(module.loss(batch)["loss"], reference)


def test_blind_model_ignores_the_image():
    module = tiny_module(blind=True).eval()
    batch = tiny_batch(2)
    a, _ = module.captioner(batch.images, batch.tokens[:, :-1])
    b, _ = module.captioner(torch.randn_like(batch.images), batch.tokens[:, :-1])
    torch.testing.assert_close(a, b)


def test_several_captions_per_image_share_one_encoding():
    module = tiny_module().eval()
    batch = tiny_batch(2)
    twice = torch.cat([batch.tokens[:1], batch.tokens[:1], batch.tokens[1:], batch.tokens[1:]])  # image-major, R = 2
    logits, _ = module.captioner(batch.images, twice[:, :-1])
    single, _ = module.captioner(batch.images, batch.tokens[:, :-1])
    torch.testing.assert_close(logits[::2], single)
    torch.testing.assert_close(logits[1::2], single)
    with pytest.raises(ValueError, match="split evenly"):
        module.captioner(batch.images, twice[:3, :-1])


def test_scheduled_sampling_feeds_model_words_after_the_first_step():
    module = tiny_module()
    module.captioner.eval()
    batch = tiny_batch()
    inputs = batch.tokens[:, :-1]
    reference, _ = module.captioner(batch.images, inputs)
    torch.testing.assert_close(module.captioner(batch.images, inputs, sample_prob=0.0)[0], reference)
    torch.manual_seed(0)
    sampled, _ = module.captioner(batch.images, inputs, sample_prob=1.0)
    torch.testing.assert_close(sampled[:, 0], reference[:, 0])  # the first input is always <bos>
    assert not torch.allclose(sampled[:, 1:], reference[:, 1:])


@pytest.mark.parametrize("attention", ["soft", "sca"])
def test_rows_that_ended_are_not_run_and_the_others_are_unchanged(attention):
    """``lengths``: each row's own steps equal the full run's (outputs and gradients); after its end, zeros."""
    module = tiny_module(attention)
    batch = tiny_batch(2)
    g = torch.Generator().manual_seed(5)
    inputs = torch.randint(4, len(WORDS), (4, 6), generator=g)  # 2 images x 2 captions, image-major
    lengths = torch.tensor([4, 6, 2, 5])  # unsorted on purpose
    valid = torch.arange(6)[None, :] < lengths[:, None]  # (4, 6)
    upstream = torch.randn(4, 6, len(WORDS), generator=g) * valid[..., None]  # a loss that reads real steps only

    def run(**kwargs):
        copy = deepcopy(module)  # training mode: each run moves the BN running statistics that the lifts read
        logits, weights = copy.captioner(batch.images, inputs, **kwargs)
        (logits * upstream).sum().backward()
        return logits.detach(), weights, {n: p.grad for n, p in copy.named_parameters()}

    full_logits, full_weights, full_grads = run()
    logits, weights, grads = run(lengths=lengths)
    torch.testing.assert_close(logits[valid], full_logits[valid])
    assert (logits[~valid] == 0).all()
    assert weights.keys() == full_weights.keys() and weights
    for name, value in weights.items():
        torch.testing.assert_close(value[valid], full_weights[name][valid])
        assert (value[~valid] == 0).all()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, full_grads[name], rtol=1e-4, atol=1e-5, msg=name)  # sums in another order
    # steps 3..5 never run
    short, _ = deepcopy(module).captioner(batch.images, inputs, lengths=torch.tensor([3, 2, 1, 3]))
    assert short.shape == (4, 6, len(WORDS)) and (short[:, 3:] == 0).all()
    torch.manual_seed(0)  # scheduled sampling on the shrinking prefix: each row draws from its own previous step
    sampled, _ = deepcopy(module).captioner(batch.images, inputs, lengths=lengths, sample_prob=1.0)
    torch.testing.assert_close(sampled[:, 0], full_logits[:, 0])  # the first input is the reference word
    assert (sampled[~valid] == 0).all() and (sampled[valid] != 0).any(dim=-1).all()
    with pytest.raises(ValueError, match="one per caption row"):
        module.captioner(batch.images, inputs, lengths=lengths[:3])


@pytest.mark.parametrize("attention", ["none", "soft", "sca"])
def test_bf16_mixed_precision_trains_and_decodes(attention):
    """What ``configs/trainer/bf16.yaml`` runs (autocast to bf16): a loss, finite gradients, captions."""
    module = tiny_module(attention)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = module.loss(tiny_batch(4))["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())
    module.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        captions, _ = module.generate(tiny_batch(2).images)
    assert len(captions) == 2


def test_doubly_stochastic_term_weighs_as_xu_et_al_eq_14_per_word():
    g = torch.Generator().manual_seed(1)
    logits, alphas = torch.randn(2, 6, 11, generator=g), torch.rand(2, 6, 4, generator=g).softmax(-1)
    targets = tiny_batch().tokens[:, 1:]  # caption lengths 6 and 4 (the second padded)
    real = targets != 0
    lam = 0.7
    # eq. 14 per caption: summed NLL over its words + lambda * sum_i (1 - sum_t alpha_ti)^2; summed over the batch
    nll = -torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]  # (B, T)
    coverage = (alphas * real[..., None]).sum(dim=1)  # (B, N)
    eq14 = (nll * real).sum() + lam * ((1 - coverage) ** 2).sum()
    loss = caption_loss(logits, [alphas], targets, pad=0, attention_reg=lam)
    torch.testing.assert_close(loss["loss"], eq14 / real.sum())  # the same objective, divided by the word count
