"""``datamodule.on_device=true``: the decoded set of each split held as one tensor on the
training device (moved there at the first batch), a batch's images gathered there by index,
and the train split augmented there (medclf.data.device_augment). The loaders then carry
only indices and targets (medclf.data.dataset.IndexDataset): a step does no host work.
For small images (MedMNIST-size) that fit in the device's memory; on CPU the same code runs.
"""

from __future__ import annotations

import numpy as np
import torch

from medclf.data.dataset import ImageDataset
from medclf.data.device_augment import BatchAugment
from medclf.data.io import convert_channels, unit_float
from medclf.data.sampling import derived_seed
from medclf.data.transforms import fit_input
from medclf.distributed import world


def stack_split(dataset: ImageDataset, channels: int, image_size, volume_size) -> torch.Tensor:
    """The split's decoded images as one (N, C, H, W) tensor: uint8 when every image is 8-bit
    (4x less device memory; scaled at gather time), else float32 in [0, 1]."""
    images = [
        convert_channels(fit_input(dataset.raw(i), image_size, volume_size), channels)
        for i in range(len(dataset))
    ]
    if any(image.dtype != np.uint8 for image in images):
        images = [unit_float(image) for image in images]
    return torch.from_numpy(np.stack(images)).movedim(-1, 1).contiguous()


class DeviceImages:
    """The splits' images on the device; :meth:`batch_images` fills a batch's ``image``."""

    def __init__(
        self,
        host: dict[str, torch.Tensor],
        augment: BatchAugment | None,
        seed: int,
    ) -> None:
        self.host = host
        self.augment = augment
        self.seed = seed
        self.on_device: dict[str, torch.Tensor] = {}
        self.batches: dict[int, int] = {}
        self.generator: torch.Generator | None = None

    def _images(self, split: str, device: torch.device) -> torch.Tensor:
        found = self.on_device.get(split)
        if found is None or found.device != device:
            found = self.on_device[split] = self.host[split].to(device)
        return found

    def batch_images(self, split: str, index: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        """The images of rows ``index`` (float32, [0, 1]); in the train split augmented with
        a generator seeded from (seed, epoch, batch number in the epoch, rank)."""
        images = self._images(split, index.device).index_select(0, index)
        images = images.float().div_(255.0) if images.dtype == torch.uint8 else images
        if split != "train" or self.augment is None:
            return images
        count = self.batches.get(epoch, 0)
        self.batches = {epoch: count + 1}
        if self.generator is None or self.generator.device != images.device:
            self.generator = torch.Generator(device=images.device)
        self.generator.manual_seed(derived_seed(self.seed, epoch, count, world()[1]))
        return self.augment(images, self.generator)
