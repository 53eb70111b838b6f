"""Random images of any size, channel and class count: for benchmarks and smoke runs (nothing to learn)."""

from __future__ import annotations

import torch

from lgm_gcp.data.in_memory import InMemoryData
from lgm_gcp.options.fields import Count


class Synthetic(InMemoryData):
    def __init__(self, train_size: Count = 1024, test_size: Count = 256, **kwargs):
        self.train_size, self.test_size = train_size, test_size
        super().__init__(**kwargs)

    def load(self):
        g = torch.Generator().manual_seed(0)
        shape = (self.in_channels, self.image_size, self.image_size)

        def split(n):
            return (torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8),
                    torch.randint(0, self.num_classes, (n,), generator=g))

        return (*split(self.train_size), *split(self.test_size))
