"""Input pipeline throughput on CIFAR-shaped data (50,000 32x32 RGB images), in one process:

  baseline  torchvision's usual pipeline: Dataset of PIL images, RandomCrop(32, padding=4),
            RandomHorizontalFlip, ToTensor, Normalize, DataLoader(batch 128, num_workers=W)
  ours      lgm_gcp's in-memory fast path (uint8 tensor, batched pad/crop/flip/normalise, no workers)

Prints images/s and the ratio ours / baseline for each W.

    python benchmarks/bench_data.py [--workers 0 2] [--device cuda] [--epochs 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from lgm_gcp.data.in_memory import InMemoryData

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


class ArrayCIFAR(InMemoryData):
    def __init__(self, x, y, **kw):
        self._arrays = x, y
        super().__init__(**kw)

    def load(self):
        x, y = self._arrays
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(x[:1000]), torch.from_numpy(y[:1000])


class PILCIFAR(Dataset):
    def __init__(self, x, y, transform):
        self.x, self.y, self.transform = x.transpose(0, 2, 3, 1), y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=50000)
    args = parser.parse_args()
    import torchvision.transforms as T

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.images, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, args.images).astype(np.int64)
    ours = ArrayCIFAR(x, y, name="cifar10", num_classes=10, image_size=32, mean=MEAN, std=STD, pad=4, flip=True)
    start = time.perf_counter()
    n = sum(len(b[1]) for b in ours.train_batches(128, seed=0, epoch=0, device=args.device))
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    ours_rate = n / (time.perf_counter() - start)
    print(f"ours (in-memory, {args.device}): {ours_rate:,.0f} images/s")
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    for w in args.workers:
        loader = DataLoader(PILCIFAR(x, y, tf), batch_size=128, shuffle=True, drop_last=True, num_workers=w)
        start = time.perf_counter()
        n = 0
        for images, labels in loader:
            images = images.to(args.device, non_blocking=True)
            n += len(labels)
        base = n / (time.perf_counter() - start)
        print(f"baseline DataLoader + PIL, {w} workers: {base:,.0f} images/s   "
              f"ours / baseline = {ours_rate / base:.1f}x")


if __name__ == "__main__":
    main()
