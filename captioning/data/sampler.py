"""The training sampler: every random choice of an epoch is a function of (seed, epoch, index).

``DrawSampler`` shuffles like ``DistributedSampler`` (from the seed and the epoch that Lightning sets at every epoch
start; sharded over the processes when there are several) and yields *draw ids* ``epoch * N + index`` instead of
indices. The dataset turns a draw id back into its item and seeds that item's random choices (which reference
captions it returns) with it. So the data a step sees does not depend on the number of loader workers, on how far
the loader prefetches, or on whether the run was resumed: after a resume, torchdata's ``StatefulDataLoader``
fast-forwards this sampler to the batch after the checkpoint and the same draws come out. Drawing from the global
torch RNG in ``__getitem__`` would not survive a resume: with ``num_workers=0`` the prefetched next batch has
already drawn from it when the checkpoint saves the RNG state.

It subclasses ``DistributedSampler`` so that Lightning keeps it (instead of wrapping it) under DDP and calls its
``set_epoch``. A resumed run builds its loader, and the loader its first iterator, before Lightning's first
``set_epoch`` call: the data module sets the restored epoch when it builds the sampler.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

from torch.utils.data import DistributedSampler


class DrawSampler(DistributedSampler):
    """Args:
    dataset: the training dataset (only its length is used).
    seed: the run's seed.
    num_replicas: processes (DDP world size).
    rank: this process's rank.
    """

    def __init__(self, dataset: Sized, *, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)

    def __iter__(self) -> Iterator[int]:
        offset = self.epoch * len(self.dataset)  # the epoch the permutation below is drawn for
        return (offset + index for index in super().__iter__())
