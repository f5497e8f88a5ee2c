"""LightningModule: cross-entropy training with the doubly stochastic attention term, generation-based evaluation.

Loss (Xu et al. 2015, eq. 14):  L = -sum_t log p(y_t) + lambda * sum_i (1 - sum_t alpha_ti)^2
The cross-entropy is averaged over non-pad target tokens; the attention term over images. Validation and test
*generate* captions (beam search, greedy at beam size 1) and score the whole split with the COCO metrics.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.data import AttributeDict

from captioning.data.dataset import Batch
from captioning.data.features import frozen_features
from captioning.data.images import IMAGENET_MEAN, IMAGENET_STD
from captioning.decoding import DecodingSpec, Generation, decode_with, suppressed
from captioning.errors import CaptioningError
from captioning.metrics.evaluator import CaptionEvaluator, EvaluationSpec
from captioning.metrics.tokenize import ptb_tokenize
from captioning.models.attention.weights import AttentionWeights
from captioning.models.captioner import Captioner, DecoderSpec, EncoderSpec, Inputs
from captioning.models.loss import caption_loss
from captioning.rng import rng_states, set_rng_states
from captioning.scst import CiderReward, SelfCritical, SelfCriticalLoss
from captioning.vocab import Vocabulary


@dataclass(frozen=True)
class CrossEntropy:
    """The cross-entropy objective (the module's ``loss``): teacher forcing with Xu et al.'s eq. 14
    (:func:`caption_loss`), optionally with scheduled sampling. What training minimizes unless ``scst`` is set; the
    validation loss either way.

    Args:
        attention_reg: lambda of the doubly stochastic attention term, weighed as in Xu et al. eq. 14 (0 disables
            it, as the official SCA-CNN code does).
        sample_prob: scheduled sampling (Bengio et al. 2015, arXiv 1506.03099): the largest probability of feeding
            the model its own previous word instead of the reference one, reached linearly over
            ``sample_ramp_epochs`` (0 disables).
        sample_ramp_epochs: epochs over which the scheduled-sampling probability rises from 0.
    """

    attention_reg: float = 1.0
    sample_prob: float = 0.0
    sample_ramp_epochs: int = 1


@dataclass(frozen=True)
class OptimizationSpec:
    """The optimizer and its learning-rate schedule.

    Args:
        optimizer: ``adamw`` (the project's) or ``adadelta`` (the official SCA-CNN code's: rho 0.95, eps 1e-6, as in
            arctic-captions' ``adadelta``, which it builds on).
        lr: the learning rate (Adadelta: its scale, 1.0 in Zeiler's method and the official code).
        weight_decay: AdamW's decoupled weight decay, on every parameter; for ``adadelta`` the coefficient of the
            official code's L2 term ``weight_decay * sum w^2`` in the loss, on the decoder's parameters only.
        lr_schedule: ``cosine`` decays the learning rate to 0 over the run, per step; ``constant`` keeps it.
        warmup_steps: optimizer steps of linear learning-rate warmup before the schedule.
        encoder_lr: the CNN's learning rate (None: ``lr``), e.g. lower for a pretrained encoder. (Freezing the CNN
            for the first epochs is the :class:`~captioning.callbacks.EncoderFinetuning` callback.)
    """

    optimizer: Literal["adamw", "adadelta"] = "adamw"
    lr: float = 4e-4
    weight_decay: float = 1e-4
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int = 0
    encoder_lr: float | None = None


class CaptioningModule(pl.LightningModule):
    """Trains and evaluates a :class:`Captioner`.

    Args:
        vocabulary: the word list (linked from the data module by the CLI); checkpoints carry it.
        encoder: CNN encoder settings.
        decoder: LSTM decoder settings.
        blind: zero the image features (the language-prior baseline).
        image_size: the square input side the model is trained on (linked from the data module; ``caption`` uses it).
        optimization: optimizer, learning rates and schedule.
        loss: the cross-entropy objective's settings (doubly stochastic term, scheduled sampling).
        scst: train with self-critical sequence training instead (:mod:`captioning.scst`: samples per image,
            baseline); start it from a cross-entropy model with ``init_weights``. None: cross-entropy.
        decoding: how validation, test, predict and ``caption`` generate (beam size, lengths, penalties).
        evaluation: the metrics validation and test compute, and their tokenizer.
        init_weights: a checkpoint whose weights a new run starts from (not its optimizer or loop state: that is
            ``--ckpt_path``, resuming); e.g. the cross-entropy model an SCST run fine-tunes.
        vocabulary_rule: how ``vocabulary`` was chosen (linked from the data module: ``counted`` splits,
            ``min_count``), recorded so that ``evaluate`` can write it into ``scores.json``; None where unknown.
        fetch_weights: fetch the encoder's ImageNet ``weights``; False builds the same model without them, for a
            state dict that replaces them (:func:`~captioning.checkpoints.load_checkpoint`). Not a setting:
            checkpoints do not record it.
    """

    def __init__(
        self,
        vocabulary: list[str],
        *,
        encoder: EncoderSpec = EncoderSpec(),  # noqa: B008 - frozen dataclasses: immutable defaults
        decoder: DecoderSpec = DecoderSpec(),  # noqa: B008
        blind: bool = False,
        image_size: int = 224,
        optimization: OptimizationSpec = OptimizationSpec(),
        loss: CrossEntropy = CrossEntropy(),
        scst: SelfCritical | None = None,
        decoding: DecodingSpec = DecodingSpec(),  # noqa: B008
        evaluation: EvaluationSpec = EvaluationSpec(),  # noqa: B008
        init_weights: str | None = None,
        vocabulary_rule: dict[str, str | int] | None = None,
        fetch_weights: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["fetch_weights"])
        self.vocab = Vocabulary(vocabulary, rule=vocabulary_rule)
        self.captioner = Captioner.build(
            len(self.vocab), encoder, decoder, blind=blind, bos=self.vocab.bos, load_weights=fetch_weights
        )
        self.evaluator = CaptionEvaluator(evaluation.metrics, tokenizer=evaluation.tokenizer)
        self.loss_spec, self.scst_spec, self.decoding, self.optimization = loss, scst, decoding, optimization
        self.self_critical: SelfCriticalLoss | None = None  # built when an SCST run starts (it reads the data)
        self._rng_to_restore: dict | None = None  # a resumed run's RNG states, applied at its first batch
        self._features_checked = None  # the feature store (--data.features) last checked against this model

    @property
    def suppressed(self) -> tuple[int, ...]:
        """Word ids never generated: ``<pad>``, ``<bos>`` and, with ``decoding.suppress_unk``, ``<unk>``."""
        return suppressed(self.decoding, self.vocab)

    # -- training -------------------------------------------------------------------------------------------------
    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        inputs, targets = batch.tokens[:, :-1], batch.tokens[:, 1:]  # (B, T) each
        sample_prob = self.scheduled_sample_prob() if self.training else 0.0
        lengths = (targets != self.vocab.pad).sum(dim=1)  # (B,): steps up to the end token; the padding is not run
        logits, weights = self.captioner(batch.images, inputs, lengths=lengths, sample_prob=sample_prob)  # (B, T, V)
        alphas = list(AttentionWeights.of(weights).spatial.values())  # each attended layer's maps (B, T, N)
        return caption_loss(logits, alphas, targets, pad=self.vocab.pad, attention_reg=self.loss_spec.attention_reg)

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
        if self.self_critical is not None:
            losses = self.self_critical(self.captioner, batch.images, batch.image_ids)
        else:
            losses = self.loss(batch)
        size = len(batch.image_ids)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=size)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=size)
        self.log("loss", losses["loss"], prog_bar=True, logger=False, batch_size=size)
        return losses["loss"]

    # -- the start of a run: initial weights, features, the SCST reward ---------------------------------------------
    def on_fit_start(self) -> None:
        if self.hparams.init_weights and self.trainer.ckpt_path is None:  # a new run; a resumed one has its own
            self.load_init_weights()
        self._check_features()
        if self.scst_spec is not None:
            # Rewards use document frequencies of the *training* references (as in Rennie et al.'s CIDEr-D
            # optimization, arXiv 1612.00563; the reported val/test CIDEr-D uses the split's own references).
            train = self.trainer.datamodule.records("train")
            tokenized = ptb_tokenize({r.image_id: list(r.captions) for r in train}, backend="python")
            self.self_critical = SelfCriticalLoss(
                self.scst_spec,
                CiderReward(tokenized),
                bos=self.vocab.bos,
                eos=self.vocab.eos,
                max_len=self.decoding.max_len,
                suppress=self.suppressed,
                decode=self.vocab.decode,
                greedy=lambda images: self.generate(images, beam_size=1)[0],
            )

    def load_init_weights(self) -> None:
        """Loads the weights of ``init_weights`` (one-line errors for a bad file or another model's weights)."""
        start = read_checkpoint(self.hparams.init_weights, map_location=self.device)
        try:
            self.load_state_dict(start["state_dict"])
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
        if store is not None and self._features_checked is not store:
            store.check(self.feature_identity())
            self._features_checked = store

    def on_validation_start(self) -> None:
        self._check_features()

    def on_test_start(self) -> None:
        self._check_features()

    def on_predict_start(self) -> None:
        self._check_features()

    # -- checkpoints: the RNG states travel with the training state, so a resumed run draws what it would have --------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Applied at the first training batch, not now: between here and that batch Lightning builds the loader
        # iterator, which draws from the global RNG (the run being resumed drew that at its epoch start, before the
        # state was saved). (Checkpoints from before this key existed resume with fresh draws.)
        self._rng_to_restore = checkpoint.get("rng_states")

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        if self._rng_to_restore is not None:
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None

    def scheduled_sample_prob(self) -> float:
        spec = self.loss_spec
        if not spec.sample_prob or self._trainer is None:
            return 0.0
        return spec.sample_prob * min(1.0, self.trainer.current_epoch / max(1, spec.sample_ramp_epochs))

    def on_train_epoch_start(self) -> None:
        # Lightning puts back the train/eval flags that each module had before its sanity-check validation by setting
        # them one by one, not through Encoder.train: that would leave a frozen backbone's BN in train mode (updating
        # its running statistics) for the whole run. Encoder.train keeps frozen parts (for good, or for the first
        # epochs: EncoderFinetuning, which runs before this hook) in eval mode.
        self.captioner.encoder.train(self.training)

    def configure_optimizers(self) -> dict:
        hp = self.optimization
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
        if self.optimization.lr_schedule == "constant" and not self.optimization.warmup_steps:
            return {"optimizer": optimizer}
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: self._lr_factor(step))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def _lr_factor(self, step: int) -> float:
        """The learning rate at optimizer step ``step`` as a fraction of ``lr``: linear warmup over ``warmup_steps``,
        then constant or a cosine decay to 0 at the run's last step (SGDR's schedule without restarts, Loshchilov &
        Hutter 2017). The run's length is read on the first step after warmup, not when the optimizer is built:
        asking Lightning for it then would build the training loader before a resumed run has restored its loop and
        loader state."""
        warmup = self.optimization.warmup_steps
        if step < warmup:
            return (step + 1) / warmup
        if self.optimization.lr_schedule == "constant" or step == 0:
            return 1.0
        total = max(1, int(self.trainer.estimated_stepping_batches) - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, total) / total))

    # -- generation -------------------------------------------------------------------------------------------------
    def generate(self, images: Inputs, *, beam_size: int | None = None) -> tuple[list[str], Generation]:
        """images (B, 3, H, W) -> captions and the raw generation (tokens, scores, attention maps).

        Decodes in eval and inference mode whatever mode the model is in, and puts its train/eval flags back
        (:func:`~captioning.decoding.beam_search`)."""
        generation = decode_with(self.captioner, images, self.decoding, self.vocab, beam_size=beam_size)
        return [self.vocab.decode(row) for row in generation.tokens], generation

    def evaluation_settings(self) -> dict[str, dict]:
        """What a score depends on besides the weights, for ``scores.json``: the decoding settings :meth:`generate`
        uses, and the vocabulary (its size and, where known, how its words were chosen)."""
        rule = self.vocab.rule or {}
        vocabulary = {"size": len(self.vocab), "counted": rule.get("counted"), "min_count": rule.get("min_count")}
        return {"decoding": dataclasses.asdict(self.decoding), "vocabulary": vocabulary}

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


#: The settings classes a checkpoint's hyperparameters may hold: all that weights-only unpickling accepts besides
#: tensors and containers (AttributeDict: Lightning's hparams container in checkpoints of older releases).
SETTINGS_CLASSES = (
    EncoderSpec,
    DecoderSpec,
    OptimizationSpec,
    CrossEntropy,
    SelfCritical,
    DecodingSpec,
    EvaluationSpec,
    AttributeDict,
)


def read_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint file's contents, by ``weights_only`` unpickling: only tensors, containers and this project's
    settings classes (:data:`SETTINGS_CLASSES`) are accepted, so a checkpoint from an untrusted source cannot run
    code. A missing or unreadable file is a one-line :class:`CaptioningError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CaptioningError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(list(SETTINGS_CLASSES)):
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        reason = f"it holds {unsafe.group(1)}, which weights-only loading refuses" if unsafe else "unpickling failed"
        raise CaptioningError(f"{path}: not a readable captioning checkpoint ({reason})") from e
    except (RuntimeError, EOFError, ValueError) as e:
        raise CaptioningError(f"{path}: not a readable captioning checkpoint ({first_line(e)})") from e
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CaptioningError(f"{path}: not a readable captioning checkpoint (no state_dict)")
    return checkpoint


def first_line(error: BaseException) -> str:
    """An exception's message, first line only (or its type's name), for a one-line error."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
