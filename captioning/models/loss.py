"""The cross-entropy captioning loss with the doubly stochastic attention term (Xu et al., "Show, Attend and Tell",
ICML 2015, arXiv 1502.03044, section 4.2.1, eq. 14)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def caption_loss(
    logits: torch.Tensor,
    alphas: list[torch.Tensor],
    targets: torch.Tensor,
    *,
    pad: int,
    attention_reg: float,
) -> dict[str, torch.Tensor]:
    """Xu et al. eq. 14 over a padded batch, divided by the batch's word count: logits (B, T, V), targets (B, T),
    and the spatial attention maps (each (B, T, N); one per attended layer, none for the ``none`` attention), whose
    terms are summed.

    Eq. 14 sums the caption's negative log-likelihood over its words and adds lambda * sum_i (1 - sum_t alpha_ti)^2
    once per caption. Divided by the number of words W in the batch, that is the mean cross-entropy per word plus
    lambda * (sum over captions of the term) / W: so ``attention_reg`` weighs the term against the likelihood as
    Xu et al.'s lambda does. (Until issue 15 the term was averaged per caption, which weighed lambda about 11x more on
    COCO's 11-word captions.) Positions whose target is ``pad`` count nowhere.
    """
    xe = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=pad)
    mask = (targets != pad).to(logits.dtype)  # (B, T)
    words = mask.sum().clamp(min=1.0)  # W
    reg = logits.new_zeros(())
    for alpha in alphas:
        coverage = (alpha * mask[..., None]).sum(dim=1)  # (B, N): sum_t alpha_ti over real words
        reg = reg + ((1.0 - coverage) ** 2).sum() / words  # sum over captions and regions, per word
    return {"loss": xe + attention_reg * reg, "xe": xe, "attention_reg": reg}
