"""Self-critical sequence training (Rennie et al., "Self-critical Sequence Training for Image Captioning", CVPR 2017,
arXiv 1612.00563, section 5).

For each image, S captions w^s are sampled from the model; each gets the reward r(w^s) = CIDEr-D(w^s, references)
and the policy gradient with a baseline b (eq. 8-9):

    L = - 1/S sum_s (r(w^s) - b) * log p(w^s)        b = r(greedy caption)      ("greedy", the paper's)
                                                     b = mean of the other S-1 samples' rewards   ("mean")

``log p(w^s)`` sums the sampled words' and the ``<eos>``'s log-probabilities; the loss is averaged over those tokens
(as the widely used implementation of Luo et al. does), so long samples do not dominate the gradient. Rewards use
CIDEr-D with document frequencies from the **training** references (as Rennie et al., arXiv 1612.00563, optimize
CIDEr-D; the reported val/test CIDEr-D still uses the split's own references), computed by the fast
:class:`~captioning.metrics.cider.CiderD`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from captioning.metrics.cider import CiderD
from captioning.models.captioner import Captioner, Inputs, input_rows

Baseline = Literal["greedy", "mean"]


@dataclass(frozen=True)
class SelfCritical:
    """Self-critical sequence training instead of cross-entropy: the module's ``scst`` (in a config,
    ``model.scst: {samples: 5}``). Start it from a cross-entropy model with ``init_weights``.

    Args:
        samples: captions sampled per image (S).
        baseline: ``greedy`` (the greedy caption's reward, Rennie et al. section 5) or ``mean`` (the other samples').
    """

    samples: int = 5
    baseline: Baseline = "greedy"

    def __post_init__(self) -> None:
        if self.samples < 1 or (self.baseline == "mean" and self.samples < 2):
            raise ValueError(
                f"SelfCritical: {self.samples} samples per image is too few for the {self.baseline} baseline"
            )


@dataclass
class Samples:
    tokens: torch.Tensor  # (B*S, T) sampled word ids, <eos>, then <eos> padding; image-major
    log_probs: torch.Tensor  # (B*S, T) log p of each sampled token (0 after the <eos>)
    mask: torch.Tensor  # (B*S, T) 1 for the words and the <eos>


def sample_captions(
    captioner: Captioner,
    images: Inputs,
    *,
    samples: int,
    bos: int,
    eos: int,
    max_len: int,
    suppress: Sequence[int] = (),
) -> Samples:
    """Draws ``samples`` captions per image from the model (multinomial at every step), with gradients.

    images (B, 3, H, W) -> :class:`Samples` of B*S rows, image-major. A caption still open after ``max_len`` words
    ends there with its ``<eos>`` scored, as in beam search.
    """
    memory = captioner.encode(images)  # {name: (B, ...)}: the CNN runs once per image
    memory = {name: value.repeat_interleave(samples, dim=0) for name, value in memory.items()}  # (B*S, ...)
    state = captioner.init_state(memory)
    images_in, device = input_rows(images)
    rows = images_in * samples
    word = torch.full((rows,), bos, dtype=torch.long, device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    tokens, log_probs, mask = [], [], []
    for t in range(max_len + 1):
        logits, state, _ = captioner.step(word, state, memory)  # (B*S, V)
        if suppress:
            logits = logits.index_fill(1, torch.tensor(list(suppress), device=logits.device), float("-inf"))
        log_p = F.log_softmax(logits, dim=-1)  # (B*S, V)
        probabilities = log_p.detach().exp()
        # (B*S,): a sampled word, or <eos> once out of words
        word = torch.full_like(word, eos) if t == max_len else torch.multinomial(probabilities, 1).squeeze(1)
        word = word.masked_fill(done, eos)
        mask.append((~done).float())
        log_probs.append(log_p.gather(1, word[:, None]).squeeze(1) * mask[-1])  # (B*S,)
        tokens.append(word)
        done = done | (word == eos)
        if bool(done.all()):
            break
    return Samples(torch.stack(tokens, 1), torch.stack(log_probs, 1), torch.stack(mask, 1))


def advantages(rewards: torch.Tensor, *, baseline: Baseline, greedy_rewards: torch.Tensor | None) -> torch.Tensor:
    """rewards (B, S), greedy_rewards (B,) -> r - b (B, S) for the chosen baseline."""
    if baseline == "greedy":
        if greedy_rewards is None:
            raise ValueError("the greedy baseline needs the greedy captions' rewards")
        return rewards - greedy_rewards[:, None]
    if rewards.shape[1] < 2:
        raise ValueError("the mean-of-samples baseline needs at least 2 samples per image")
    others = (rewards.sum(dim=1, keepdim=True) - rewards) / (rewards.shape[1] - 1)  # (B, S) mean of the others
    return rewards - others


def scst_loss(samples: Samples, advantage: torch.Tensor) -> torch.Tensor:
    """-(r - b) log p(w), averaged over the sampled tokens (eq. 9). advantage (B, S) -> scalar."""
    weights = advantage.reshape(-1, 1).to(samples.log_probs.dtype)  # (B*S, 1), no gradient through the reward
    return -(weights * samples.log_probs).sum() / samples.mask.sum().clamp(min=1.0)


class CiderReward:
    """CIDEr-D rewards against tokenized references, with document frequencies from a training corpus.

    Args:
        corpus: image id -> tokenized training references (the document frequencies; also the references looked
            up by :meth:`__call__`).
    """

    def __init__(self, corpus: Mapping[int, Sequence[str]]) -> None:
        self.references = {key: list(refs) for key, refs in corpus.items()}
        self.cider = CiderD(self.references)

    def __call__(self, image_ids: Sequence[int], captions: Sequence[str]) -> torch.Tensor:
        """One score per caption; ``captions`` are grouped by image in the order of ``image_ids`` (len(captions) =
        len(image_ids) * S). -> (B, S)."""
        per_image = len(captions) // len(image_ids)
        candidates = {row: caption for row, caption in enumerate(captions)}
        references = {row: self.references[image_ids[row // per_image]] for row in candidates}
        _, scores = self.cider.score(candidates, references)
        return torch.tensor(scores).view(len(image_ids), per_image)


class SelfCriticalLoss:
    """Rennie et al. 2017 eq. 9 on a batch: S sampled captions per image, their CIDEr-D rewards, the baseline, and
    the policy-gradient loss (:func:`scst_loss`). Built when a run starts, from the training references.

    Args:
        spec: samples per image and baseline.
        reward: CIDEr-D against the training references.
        bos: the start token.
        eos: the end token.
        max_len: most words per sampled caption.
        suppress: word ids never sampled.
        decode: word ids (T,) -> caption text.
        greedy: images -> the greedy captions (test-time decoding: eval mode, dropout off), for that baseline.
    """

    def __init__(
        self,
        spec: SelfCritical,
        reward: CiderReward,
        *,
        bos: int,
        eos: int,
        max_len: int,
        suppress: Sequence[int],
        decode: Callable[[torch.Tensor], str],
        greedy: Callable[[Inputs], list[str]],
    ) -> None:
        self.spec, self.reward, self.decode, self.greedy = spec, reward, decode, greedy
        self.draw = {"samples": spec.samples, "bos": bos, "eos": eos, "max_len": max_len, "suppress": tuple(suppress)}

    def __call__(self, captioner: Captioner, images: Inputs, image_ids: Sequence[int]) -> dict[str, torch.Tensor]:
        samples = sample_captions(captioner, images, **self.draw)
        rewards = self.reward(image_ids, [self.decode(row) for row in samples.tokens])  # (B, S)
        greedy = self.reward(image_ids, self.greedy(images))[:, 0] if self.spec.baseline == "greedy" else None  # (B,)
        device = samples.log_probs.device
        advantage = advantages(rewards, baseline=self.spec.baseline, greedy_rewards=greedy).to(device)  # (B, S)
        return {
            "loss": scst_loss(samples, advantage),
            "reward": rewards.mean().to(device),
            "advantage": advantage.mean(),
        }
