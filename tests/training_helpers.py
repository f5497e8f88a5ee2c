"""A callback for the resume test: the training process kills itself with SIGKILL at a chosen optimizer step (no
cleanup, no final checkpoint: what an out-of-memory kill or a pre-empted node does)."""

import os
import signal

import pytorch_lightning as pl


class KillAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)
