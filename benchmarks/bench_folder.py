"""Image-folder loading throughput on a generated JPEG tree of ImageNet-like sizes, in one process:

  reference  torchvision's classification reference recipe: ImageFolder + PIL transforms
             (RandomResizedCrop 224 + flip | Resize 256 + CenterCrop 224, ToTensor, Normalize)
             + DataLoader(batch, shuffle, num_workers=W, pin_memory on CUDA)
  ours       lgm_gcp's ImageFolderData (kept loaders, per-image seeds) with dataset.decoder=tensor
             (libjpeg-turbo via torchvision.io + transforms.v2 on uint8 tensors) and decoder=pil

Prints images/s of the training and evaluation loaders for each worker count W and the ratio
ours / reference, the median of interleaved rounds (the machine's speed drifts; each round times
every case in turn). With --device cuda it also prints nvJPEG's batched decode rate
(torchvision.io.decode_jpeg on the GPU) beside libjpeg-turbo's on one CPU thread.

    python benchmarks/bench_folder.py [--workers 1 2] [--images 1000] [--rounds 3] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lgm_gcp.data.folder import ImageFolderData

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLASSES = 10


def make_tree(root: Path, images: int) -> Path:
    """``images`` training and images/4 validation JPEGs (quality 90) whose sides are drawn around
    ImageNet's typical 500x375 (300-600 px), smooth content so the files have photo-like sizes."""
    if (root / "done").exists():
        return root
    rng = np.random.default_rng(0)
    for split, n in (("train", images), ("val", images // 4)):
        for i in range(n):
            folder = root / split / f"class_{i % CLASSES}"
            folder.mkdir(parents=True, exist_ok=True)
            w, h = int(rng.integers(400, 600)), int(rng.integers(300, 450))
            coarse = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
            noise = rng.integers(-12, 13, (h, w, 3))
            smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.int64)
            Image.fromarray(np.clip(smooth + noise, 0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)
    (root / "done").touch()
    return root


def reference_loaders(root: Path, batch: int, workers: int, pin: bool):
    from torchvision import datasets
    from torchvision import transforms as T

    norm = T.Normalize(MEAN, STD)
    train = datasets.ImageFolder(str(root / "train"), T.Compose(
        [T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), norm]))
    val = datasets.ImageFolder(str(root / "val"), T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), norm]))
    kw = dict(batch_size=batch, num_workers=workers, pin_memory=pin, persistent_workers=workers > 0)
    return (torch.utils.data.DataLoader(train, shuffle=True, **kw),
            torch.utils.data.DataLoader(val, shuffle=False, **kw))


def rate(batches, device) -> float:
    start, n = time.perf_counter(), 0
    for images, labels in batches:
        images = images.to(device, non_blocking=True)
        n += len(labels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def gpu_decode(root: Path, device) -> None:
    from torchvision.io import ImageReadMode, decode_jpeg

    files = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in sorted(root.rglob("*.jpg"))]
    torch.set_num_threads(1)
    start = time.perf_counter()
    for data in files:
        decode_jpeg(data, mode=ImageReadMode.RGB)
    cpu = len(files) / (time.perf_counter() - start)
    decode_jpeg(files[:8], device=device)  # warm nvJPEG
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, len(files), 64):
        decode_jpeg(files[i: i + 64], mode=ImageReadMode.RGB, device=device)
    torch.cuda.synchronize()
    gpu = len(files) / (time.perf_counter() - start)
    print(f"decode only: libjpeg-turbo 1 CPU thread {cpu:,.0f} images/s, nvJPEG batches of 64 {gpu:,.0f} images/s "
          f"({gpu / cpu:.1f}x)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", type=Path, default=Path("/tmp/lgm_gcp_bench_folder"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    root = make_tree(args.root / str(args.images), args.images)
    print(f"{args.images} training + {args.images // 4} validation JPEGs under {root}, batch {args.batch}, "
          f"device {device}")
    for workers in args.workers:
        ref_train, ref_val = reference_loaders(root, args.batch, workers, device.type == "cuda")
        ours = {d: ImageFolderData("bench", str(root), CLASSES, 224, MEAN, STD, num_workers=workers, decoder=d)
                for d in ("tensor", "pil")}
        cases = {"train reference": lambda loader=ref_train: rate(loader, device),
                 "val reference": lambda loader=ref_val: rate(loader, device)}
        for d, data in ours.items():
            cases[f"train ours ({d})"] = lambda data=data, d=d: rate(
                data.train_batches(args.batch, seed=0, epoch=0, device=device), device)
            cases[f"val ours ({d})"] = lambda data=data: rate(data.test_batches(args.batch, device=device), device)
        for fn in cases.values():  # warm-up: workers start, page cache filled
            fn()
        rates = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, fn in cases.items():
                rates[name].append(fn())
        for name in cases:
            split = name.split()[0]
            ratios = [a / b for a, b in zip(rates[name], rates[f"{split} reference"])]
            print(f"W={workers}  {name:20s} {statistics.median(rates[name]):8,.0f} images/s   "
                  f"/ reference {statistics.median(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f})")
    if device.type == "cuda":
        gpu_decode(root, device)


if __name__ == "__main__":
    main()
