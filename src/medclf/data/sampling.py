"""The train split's sample order and augmentation, both a function of (seed, epoch) only.

:class:`EpochSampler` shuffles (or, with ``sampler=balanced``, draws by class weight) from a
generator seeded with ``seed + epoch``, shares the order among DDP ranks like Lightning's
DistributedSampler (which it is, so Lightning leaves it in place), and yields
``(epoch, index)`` keys. :class:`~medclf.data.dataset.ImageDataset` seeds the sample's
augmentation from ``(seed, epoch, index)`` (:func:`derived_seed`). So an epoch's batches do
not depend on what ran before it, on the number of loader workers, or on whether they
persist: a run resumed from an epoch-end checkpoint sees exactly the batches an
uninterrupted run sees.

:class:`EvalSampler` gives each rank its share of the validation or test set without the
padding of Lightning's DistributedSampler, so metrics count each sample exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from medclf.distributed import world


def derived_seed(*parts: int) -> int:
    """A 32-bit seed derived from ``parts`` (distinct per tuple): e.g. (seed, epoch, index)
    for one sample's augmentation in one epoch."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


class EpochSampler(DistributedSampler):
    """The train split for this rank: a permutation seeded with ``seed + epoch`` (or, with
    ``weights``, that many draws with replacement), padded to a multiple of the world size
    and dealt out rank by rank; yields ``(epoch, index)``. Lightning calls ``set_epoch``."""

    def __init__(
        self, dataset: Dataset, seed: int, epoch: int = 0, weights: torch.Tensor | None = None
    ) -> None:
        size, rank = world()
        super().__init__(dataset, num_replicas=size, rank=rank, shuffle=True, seed=seed)
        self.weights = weights
        self.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.weights is None:
            indices = list(super().__iter__())
        else:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            drawn = torch.multinomial(
                self.weights, self.total_size, replacement=True, generator=generator
            )
            indices = drawn[self.rank : self.total_size : self.num_replicas].tolist()
        epoch = self.epoch
        return iter([(epoch, i) for i in indices])


class EvalSampler(DistributedSampler):
    """Rank r of N takes samples r, r+N, r+2N, ... in order: no padding, no repeats, so the
    synchronised metrics and the gathered predictions cover each sample once."""

    def __init__(self, dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))


def eval_sampler(dataset) -> EvalSampler | None:
    """An :class:`EvalSampler` when running distributed (world size > 1), else None."""
    size, rank = world()
    return EvalSampler(dataset, size, rank) if size > 1 else None
