"""LightningModule: cross-entropy training with the doubly stochastic attention term, generation-based evaluation.

Loss (Xu et al. 2015, eq. 14):  L = -sum_t log p(y_t) + lambda * sum_i (1 - sum_t alpha_ti)^2
The cross-entropy is averaged over non-pad target tokens; the attention term over images. Validation and test
*generate* captions (beam search, greedy at beam size 1) and score the whole split with the COCO metrics.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import pickle
import re
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightning_fabric.utilities.data import AttributeDict

from captioning.data.dataset import Batch
from captioning.data.images import IMAGENET_MEAN, IMAGENET_STD
from captioning.decoding import Generation, LengthPenalty, beam_search
from captioning.errors import CaptioningError, ConfigError
from captioning.metrics.evaluator import CaptionEvaluator
from captioning.metrics.tokenize import Backend, ptb_tokenize
from captioning.models.attention.weights import AttentionWeights
from captioning.models.captioner import Captioner, DecoderSpec, EncoderSpec, Inputs
from captioning.rng import rng_states, set_rng_states
from captioning.scst import Baseline, CiderReward, advantages, sample_captions, scst_loss
from captioning.vocab import Vocabulary


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


class CaptioningModule(pl.LightningModule):
    """Trains and evaluates a :class:`Captioner`.

    Args:
        vocabulary: the word list (linked from the data module by the CLI); checkpoints carry it.
        encoder: CNN encoder settings.
        decoder: LSTM decoder settings.
        blind: zero the image features (the language-prior baseline).
        image_size: the square input side the model is trained on (linked from the data module; ``caption`` uses it).
        lr: the learning rate (Adadelta: its scale, 1.0 in Zeiler's method and the official SCA-CNN code).
        weight_decay: AdamW's decoupled weight decay, on every parameter; for ``adadelta`` the coefficient of the
            official code's L2 term ``weight_decay * sum w^2`` in the loss, on the decoder's parameters only.
        optimizer: ``adamw`` (the project's) or ``adadelta`` (the official SCA-CNN code's: rho 0.95, eps 1e-6, as
            in arctic-captions' ``adadelta``, which it builds on).
        lr_schedule: ``cosine`` decays the learning rate to 0 over the run, per step; ``constant`` keeps it.
        warmup_steps: optimizer steps of linear learning-rate warmup before the schedule.
        encoder_lr: the CNN's learning rate (None: ``lr``), e.g. lower for a pretrained encoder.
        encoder_frozen_epochs: the CNN is frozen for this many first epochs (BN statistics included) ...
        encoder_unfreeze: ... after which these backbone stages are trained (``layer4``, ...; empty: all of them).
        sample_prob: scheduled sampling (Bengio et al. 2015): the largest probability of feeding the model its own
            previous word instead of the reference one, reached linearly over ``sample_ramp_epochs`` (0 disables).
        sample_ramp_epochs: epochs over which the scheduled-sampling probability rises from 0.
        attention_reg: lambda of the doubly stochastic attention term, weighed as in Xu et al. eq. 14 (see
            :func:`caption_loss`; 0 disables it, as the official SCA-CNN code does).
        max_len: longest generated caption, in words.
        beam_size: beams for validation/test/predict generation (1 = greedy).
        min_len: shortest generated caption, in words.
        length_penalty: how beams are ranked: ``none`` (sum of log-probabilities), ``average`` (per word) or
            ``gnmt`` (Wu et al. 2016, exponent ``length_alpha``); see :mod:`captioning.decoding`.
        length_alpha: the ``gnmt`` exponent.
        block_trigrams: forbid repeating a trigram within a caption.
        suppress_unk: never generate ``<unk>`` (``<pad>`` and ``<bos>`` are never generated either way).
        metrics: pycocoevalcap metrics computed at validation and test.
        tokenizer: PTB tokenizer for those metrics: ``java`` (pycocoevalcap's) or ``python`` (the same tokens on
            caption text, no JVM start; METEOR still runs on Java).
        scst: train with self-critical sequence training (:mod:`captioning.scst`) instead of cross-entropy; start it
            from a cross-entropy model with ``init_weights``.
        scst_samples: captions sampled per image for SCST.
        scst_baseline: ``greedy`` (the greedy caption's reward, Rennie et al.) or ``mean`` (the other samples').
        init_weights: a checkpoint whose weights a new run starts from (not its optimizer or loop state: that is
            ``--ckpt_path``, resuming); e.g. the cross-entropy model an SCST run fine-tunes.
        vocabulary_rule: how ``vocabulary`` was chosen (linked from the data module: ``counted`` splits,
            ``min_count``), recorded so that ``evaluate`` can write it into ``scores.json``; None where unknown.
    """

    def __init__(
        self,
        vocabulary: list[str],
        *,
        encoder: EncoderSpec = EncoderSpec(),  # noqa: B008 - frozen dataclass: immutable default
        decoder: DecoderSpec = DecoderSpec(),  # noqa: B008
        blind: bool = False,
        image_size: int = 224,
        lr: float = 4e-4,
        weight_decay: float = 1e-4,
        optimizer: Literal["adamw", "adadelta"] = "adamw",
        lr_schedule: Literal["constant", "cosine"] = "cosine",
        warmup_steps: int = 0,
        encoder_lr: float | None = None,
        encoder_frozen_epochs: int = 0,
        encoder_unfreeze: tuple[str, ...] = (),
        sample_prob: float = 0.0,
        sample_ramp_epochs: int = 1,
        attention_reg: float = 1.0,
        max_len: int = 16,
        beam_size: int = 1,
        min_len: int = 0,
        length_penalty: LengthPenalty = "none",
        length_alpha: float = 0.6,
        block_trigrams: bool = False,
        suppress_unk: bool = True,
        metrics: tuple[str, ...] = ("Bleu", "METEOR", "ROUGE_L", "CIDEr"),
        tokenizer: Backend = "java",
        scst: bool = False,
        scst_samples: int = 5,
        scst_baseline: Baseline = "greedy",
        init_weights: str | None = None,
        vocabulary_rule: dict[str, str | int] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.vocab = Vocabulary(vocabulary, rule=vocabulary_rule)
        self.captioner = Captioner.build(len(self.vocab), encoder, decoder, blind=blind, bos=self.vocab.bos)
        self.evaluator = CaptionEvaluator(metrics, tokenizer=tokenizer)

    # -- training -------------------------------------------------------------------------------------------------
    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        inputs, targets = batch.tokens[:, :-1], batch.tokens[:, 1:]  # (B, T) each
        sample_prob = self.scheduled_sample_prob() if self.training else 0.0
        lengths = (targets != self.vocab.pad).sum(dim=1)  # (B,): steps up to the end token; the padding is not run
        logits, weights = self.captioner(batch.images, inputs, lengths=lengths, sample_prob=sample_prob)  # (B, T, V)
        alphas = list(AttentionWeights.of(weights).spatial.values())  # each attended layer's maps (B, T, N)
        return caption_loss(logits, alphas, targets, pad=self.vocab.pad, attention_reg=self.hparams.attention_reg)

    def _count_skipped(self, batch: Batch, stage: str) -> bool:
        """Logs the batch's unreadable images (summed over the epoch and the ranks); True when none is left."""
        self.log(
            f"{stage}/skipped_images",
            float(batch.skipped),
            reduce_fx="sum",
            on_step=False,
            on_epoch=True,
            sync_dist=True,
            batch_size=1,
        )
        return not batch.image_ids

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        if self._count_skipped(batch, "train"):
            if self.trainer.world_size == 1:
                return None  # every image of the batch was unreadable: Lightning skips the step
            # DDP cannot skip a step on one process only: a zero loss keeps the gradient all-reduce in step
            return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        losses = self.scst_losses(batch) if self.hparams.scst else self.loss(batch)
        size = len(batch.image_ids)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=size)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=size)
        self.log("loss", losses["loss"], prog_bar=True, logger=False, batch_size=size)
        return losses["loss"]

    # -- self-critical sequence training -----------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        hp = self.hparams
        if hp.encoder_frozen_epochs:
            stages = {n for n, _ in self.captioner.encoder.backbone.named_children()}
            if unknown := set(hp.encoder_unfreeze) - stages:
                raise ConfigError(
                    f"encoder_unfreeze: unknown stages {sorted(unknown)}; the encoder has {sorted(stages)}"
                )
            if self.trainer.world_size > 1 and not getattr(self.trainer.strategy, "_ddp_kwargs", {}).get(
                "find_unused_parameters"
            ):
                raise ConfigError(
                    "encoder_frozen_epochs under DDP needs --trainer.strategy ddp_find_unused_parameters_true "
                    "(frozen layers produce no gradient for DDP to wait for)"
                )
        if hp.init_weights and self.trainer.ckpt_path is None:  # a new run; a resumed one has its own weights
            self.load_init_weights()
        self._check_features()
        if hp.scst:
            # Rewards use document frequencies of the *training* references (as in Rennie et al.'s CIDEr-D
            # optimization, arXiv 1612.00563; the reported val/test CIDEr-D uses the split's own references).
            train = self.trainer.datamodule.records("train")
            tokenized = ptb_tokenize({r.image_id: list(r.captions) for r in train}, backend="python")
            self.reward = CiderReward(tokenized)

    def load_init_weights(self) -> None:
        """Loads the weights of ``init_weights`` (one-line errors for a bad file or another model's weights)."""
        start = load_checkpoint(self.hparams.init_weights, map_location=self.device)
        try:
            self.load_state_dict(start.state_dict())
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise CaptioningError(f"{self.hparams.init_weights}: its model differs from this run's ({first})") from e

    # -- pre-extracted features (captioning extract, --data.features) ----------------------------------------------
    def feature_identity(self) -> dict:
        """What a feature folder must have been made with for this model to read it instead of the images: the
        encoder, a checksum of the weights the stored maps depend on, the input size and transform, the attention
        and the stored maps' shapes. Refuses (:class:`ConfigError`) a model whose encoder trains a parameter below
        the stored maps: they could not stand for its CNN."""
        spec = self.hparams.encoder
        spec = spec if isinstance(spec, dict) else dataclasses.asdict(spec)
        decoder = self.hparams.decoder
        decoder = decoder if isinstance(decoder, dict) else dataclasses.asdict(decoder)
        shapes, checksum = frozen_features(self.captioner, self.hparams.image_size)
        attention = self.captioner.decoder.attention
        return {
            "encoder": {k: spec[k] for k in ("arch", "depth", "attention", "width", "output_stride", "weights")},
            "frozen_weights_sha256": checksum,
            "image_size": self.hparams.image_size,
            "transform": {"resize": "antialiased bilinear", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
            "attention": decoder["attention"],
            "lowest_attended": attention.names[0] if hasattr(attention, "names") else None,
            "features": shapes,
        }

    def _check_features(self) -> None:
        """With ``--data.features``: refuses features made for another model (once per run and stage)."""
        store = getattr(getattr(self._trainer, "datamodule", None), "feature_store", None)
        if store is not None and getattr(self, "_features_checked", None) is not store:
            store.check(self.feature_identity())
            self._features_checked = store

    def on_validation_start(self) -> None:
        self._check_features()

    def on_test_start(self) -> None:
        self._check_features()

    def on_predict_start(self) -> None:
        self._check_features()

    def scst_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Rennie et al. 2017 eq. 9 on one batch (see :mod:`captioning.scst`)."""
        hp, vocab = self.hparams, self.vocab
        suppress = (vocab.pad, vocab.bos, *((vocab.unk,) if hp.suppress_unk else ()))
        draw = {"samples": hp.scst_samples, "bos": vocab.bos, "eos": vocab.eos, "max_len": hp.max_len}
        samples = sample_captions(self.captioner, batch.images, suppress=suppress, **draw)
        rewards = self.reward(batch.image_ids, [vocab.decode(row) for row in samples.tokens])  # (B, S)
        greedy = None
        if hp.scst_baseline == "greedy":
            # The test-time caption (Rennie et al. section 5): generate() decodes in eval mode, dropout off, and puts
            # the training mode back.
            captions, _ = self.generate(batch.images, beam_size=1)
            greedy = self.reward(batch.image_ids, captions)[:, 0]  # (B,)
        advantage = advantages(rewards, baseline=hp.scst_baseline, greedy_rewards=greedy).to(self.device)
        loss = scst_loss(samples, advantage)
        reward = rewards.mean().to(self.device)
        return {"loss": loss, "reward": reward, "advantage": advantage.mean()}

    # -- checkpoints: the RNG states travel with the training state, so a resumed run draws what it would have --------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Applied at the first training batch, not now: between here and that batch Lightning builds the loader
        # iterator, which draws from the global RNG (the run being resumed drew that at its epoch start, before the
        # state was saved). (Checkpoints from before this key existed resume with fresh draws.)
        self._rng_to_restore = checkpoint.get("rng_states")

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        if getattr(self, "_rng_to_restore", None) is not None:
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None

    def scheduled_sample_prob(self) -> float:
        hp = self.hparams
        if not hp.sample_prob or self._trainer is None:
            return 0.0
        return hp.sample_prob * min(1.0, self.trainer.current_epoch / max(1, hp.sample_ramp_epochs))

    def on_train_epoch_start(self) -> None:
        hp, encoder = self.hparams, self.captioner.encoder
        if self.current_epoch < hp.encoder_frozen_epochs:
            encoder.set_frozen(None)  # the whole CNN
        elif hp.encoder_frozen_epochs:
            chosen = set(hp.encoder_unfreeze)
            encoder.set_frozen({n for n, _ in encoder.backbone.named_children()} - chosen if chosen else set())
        else:
            # Lightning puts back the train/eval flags that each module had before its sanity-check validation by
            # setting them one by one, not through Encoder.train: that would leave a frozen backbone's BN in train
            # mode (updating its running statistics) for the whole run.
            encoder.train(self.training)

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        cnn = list(self.captioner.encoder.parameters())
        cnn_ids = {id(p) for p in cnn}
        groups = [{"params": [p for p in self.parameters() if id(p) not in cnn_ids]}]
        groups.append({"params": cnn, "lr": hp.encoder_lr if hp.encoder_lr is not None else hp.lr})
        if hp.optimizer == "adadelta":
            # torch adds weight_decay * w to the gradient: the gradient of the official (weight_decay / 2) * sum w^2,
            # so the official weight_decay * sum w^2 is 2 * weight_decay here; the CNN has none (decoder only).
            groups[0]["weight_decay"], groups[1]["weight_decay"] = 2 * hp.weight_decay, 0.0
            optimizer = torch.optim.Adadelta(groups, lr=hp.lr, rho=0.95, eps=1e-6, foreach=True)
            return self._with_schedule(optimizer)
        # The fused AdamW kernel (CPU and CUDA): one pass per parameter tensor instead of about ten elementwise ops;
        # 10x faster than the default per-tensor loop on the CPU here. Lightning refuses fused optimizers under
        # mixed precision with clipping (they may unscale internally), so mixed precision gets the foreach kernels.
        mixed = self._trainer is not None and "mixed" in str(self.trainer.precision)
        kernel = {"foreach": True} if mixed else {"fused": True}
        return self._with_schedule(torch.optim.AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay, **kernel))

    def _with_schedule(self, optimizer: torch.optim.Optimizer) -> dict:
        if self.hparams.lr_schedule == "constant" and not self.hparams.warmup_steps:
            return {"optimizer": optimizer}
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: self._lr_factor(step))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def _lr_factor(self, step: int) -> float:
        """The learning rate at optimizer step ``step`` as a fraction of ``lr``: linear warmup over ``warmup_steps``,
        then constant or a cosine decay to 0 at the run's last step (SGDR's schedule without restarts, Loshchilov &
        Hutter 2017). The run's length is read on the first step after warmup, not when the optimizer is built:
        asking Lightning for it then would build the training loader before a resumed run has restored its loop and
        loader state."""
        warmup = self.hparams.warmup_steps
        if step < warmup:
            return (step + 1) / warmup
        if self.hparams.lr_schedule == "constant" or step == 0:
            return 1.0
        total = max(1, int(self.trainer.estimated_stepping_batches) - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, total) / total))

    # -- generation -------------------------------------------------------------------------------------------------
    def generate(self, images: Inputs, *, beam_size: int | None = None) -> tuple[list[str], Generation]:
        """images (B, 3, H, W) -> captions and the raw generation (tokens, scores, attention maps).

        Decodes in eval and inference mode whatever mode the model is in, and puts its train/eval flags back
        (:func:`~captioning.decoding.beam_search`)."""
        hp, vocab = self.hparams, self.vocab
        generation = beam_search(
            self.captioner,
            images,
            bos=vocab.bos,
            eos=vocab.eos,
            max_len=hp.max_len,
            beam_size=beam_size or hp.beam_size,
            min_len=hp.min_len,
            length_penalty=hp.length_penalty,
            length_alpha=hp.length_alpha,
            block_trigrams=hp.block_trigrams,
            suppress=(vocab.pad, vocab.bos, *((vocab.unk,) if hp.suppress_unk else ())),
        )
        return [self.vocab.decode(row) for row in generation.tokens], generation

    def evaluation_settings(self) -> dict[str, dict]:
        """What a score depends on besides the weights, for ``scores.json``: the decoding settings :meth:`generate`
        uses, and the vocabulary (its size and, where known, how its words were chosen)."""
        hp = self.hparams
        names = ("beam_size", "length_penalty", "length_alpha", "min_len", "max_len", "block_trigrams", "suppress_unk")
        rule = self.vocab.rule or {}
        vocabulary = {"size": len(self.vocab), "counted": rule.get("counted"), "min_count": rule.get("min_count")}
        return {"decoding": {name: hp[name] for name in names}, "vocabulary": vocabulary}

    # -- evaluation -------------------------------------------------------------------------------------------------
    def _eval_step(self, batch: Batch, stage: str) -> None:
        if self._count_skipped(batch, stage):
            return
        self.log(f"{stage}/loss", self.loss(batch)["xe"], batch_size=len(batch.image_ids), sync_dist=True)
        captions, generation = self.generate(batch.images)
        self.evaluator.add(batch.image_ids, captions, batch.references, generation.attention)

    def _eval_epoch_end(self, stage: str) -> None:
        if self.trainer.sanity_checking:  # a 2-batch sanity run would log meaningless split scores
            self.evaluator.reset()
            return
        evaluation = self.evaluator.evaluate()  # kept as self.evaluator.last (what `evaluate` writes)
        # Every rank holds the same broadcast scores; sync_dist averages identical values (and keeps Lightning quiet).
        measured = {k: v for k, v in {**evaluation.scores, **evaluation.grounding}.items() if v is not None}
        scores = {f"{stage}/{k}": v for k, v in measured.items()}
        self.log_dict(scores, prog_bar=stage == "val", sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self.evaluator.reset()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_start(self) -> None:
        self.evaluator.reset()

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: Batch, batch_idx: int) -> list[dict]:
        if not batch.image_ids:
            return []
        captions, _ = self.generate(batch.images)
        return [{"image_id": i, "caption": c} for i, c in zip(batch.image_ids, captions, strict=True)]


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu", **overrides) -> CaptioningModule:
    """Loads a module from a checkpoint alone (vocabulary and settings are inside it).

    ``overrides`` replace saved hyperparameters that do not change the weights (``beam_size``, ``max_len``,
    ``length_penalty``, ``block_trigrams``, ...).

    Uses ``weights_only`` unpickling: only tensors, containers and this project's plain settings classes are
    accepted, so a checkpoint from an untrusted source cannot run code.
    """
    path = Path(path)
    if not path.is_file():
        raise CaptioningError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals([EncoderSpec, DecoderSpec, AttributeDict]):
            module = CaptioningModule.load_from_checkpoint(
                path, map_location=map_location, weights_only=True, **overrides
            )
    except pickle.UnpicklingError as e:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        reason = f"it holds {unsafe.group(1)}, which weights-only loading refuses" if unsafe else "unpickling failed"
        raise CaptioningError(f"{path}: not a readable captioning checkpoint ({reason})") from e
    except (RuntimeError, KeyError, EOFError, ValueError, TypeError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CaptioningError(f"{path}: not a readable captioning checkpoint ({first_line})") from e
    return module.eval()


def frozen_features(captioner: Captioner, image_size: int) -> tuple[dict[str, list[int]], str]:
    """The maps :meth:`Captioner.features` stores for one image ({name: [C, h, w]}), and a SHA-256 of the encoder
    weights and buffers they depend on. Which parameters they depend on is read off autograd (those with a gradient
    path from a probe image to the maps); a parameter among them that trains is refused (:class:`ConfigError`)."""
    encoder = captioner.encoder
    named = dict(encoder.named_parameters())
    trains = {name for name, p in named.items() if p.requires_grad}
    training = captioner.training
    captioner.eval()  # what extraction runs: BN on running statistics
    try:
        for p in named.values():
            p.requires_grad_(True)
        probe = torch.zeros(1, 3, image_size, image_size, device=next(encoder.parameters()).device)
        with torch.enable_grad():
            maps = captioner.features(probe)
            grads = torch.autograd.grad(sum(m.sum() for m in maps.values()), list(named.values()), allow_unused=True)
    finally:
        for name, p in named.items():
            p.requires_grad_(name in trains)
        captioner.train(training)
    used = {name for name, g in zip(named, grads, strict=True) if g is not None}
    if trained := sorted(used & trains):
        raise ConfigError(
            f"pre-extracted features stand for a frozen CNN, but encoder.{trained[0]} ({len(trained)} trained "
            "parameters) lies below the stored maps: freeze it (encoder.trainable false, train_attention false, "
            "train_modules above the lowest attended layer) or train without --data.features"
        )
    owners = {name.rpartition(".")[0] for name in used}  # the modules whose parameters the maps read
    digest = hashlib.sha256()
    for key, value in sorted(encoder.state_dict().items()):
        if key.rpartition(".")[0] in owners:  # their weights and buffers (BN running statistics)
            digest.update(key.encode())
            digest.update(value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype's bytes
    return {name: list(m.shape[1:]) for name, m in maps.items()}, digest.hexdigest()
