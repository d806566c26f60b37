"""Images/s of Thresher's device pipeline vs the usual PIL + DataLoader input pipeline.

Both sides start from the same in-memory uint8 CIFAR-10 training images and end with a
normalised float batch of 128 with `standard` augmentation (4-pixel zero-padded random crop and
a horizontal flip). The reference is what a torchvision user writes —

    Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), ToTensor(), Normalize(m, s)])

over a Dataset that turns each uint8 array into a PIL image, fed through a `DataLoader`. It is
written here with PIL, transform by transform as torchvision implements them (constant-fill
`ImageOps.expand` padding, `Image.crop`, `FLIP_LEFT_RIGHT`, `np.array` -> CHW float / 255,
in-place sub/div), because torchvision cannot be imported beside the CPU torch build used here.

    python benchmarks/pipeline.py [--dataset cifar10] [--images 20000]
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

from thresher.data import load
from thresher.data.pipeline import BatchLoader, Normalize


class PILStandardAugment(Dataset):
    """torchvision's CIFAR recipe, one image per `__getitem__` call."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, mean, std) -> None:
        self.images, self.labels = images_hwc, labels
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i])
        # RandomCrop(32, padding=4): pad with fill 0, then crop at a uniform offset
        img = ImageOps.expand(img, border=4, fill=0)
        top, left = random.randint(0, 8), random.randint(0, 8)
        img = img.crop((left, top, left + 32, top + 32))
        # RandomHorizontalFlip(p=0.5)
        if torch.rand(1) < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        # ToTensor: HWC uint8 -> CHW float in [0, 1]
        x = torch.from_numpy(np.array(img, np.uint8, copy=True))
        x = x.view(img.size[1], img.size[0], len(img.getbands())).permute(2, 0, 1).contiguous()
        x = x.to(torch.float32).div(255)
        # Normalize(mean, std)
        x = x.sub_(self.mean).div_(self.std)
        return x, int(self.labels[i])


def time_loader(batches, limit: int) -> float:
    """Images/s over the first ``limit`` images of an iterable of batches."""
    seen = 0
    start = time.perf_counter()
    for batch in batches:
        seen += len(batch[1])
        if seen >= limit:
            break
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--images", type=int, default=20000,
                        help="images timed per reference configuration")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    torch.manual_seed(0)
    random.seed(0)
    train = load(args.dataset, "train")
    norm = Normalize.from_dataset(train)
    hwc = train.images.permute(0, 2, 3, 1).numpy()
    if hwc.shape[-1] == 1:
        hwc = hwc[..., 0]
    dataset = PILStandardAugment(hwc, train.labels.numpy(), norm.mean, norm.std)

    results = {}
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                            num_workers=workers, persistent_workers=workers > 0)
        if workers:
            time_loader(loader, 4 * args.batch_size)  # start the workers outside the timing
        results[f"PIL + DataLoader, num_workers={workers}"] = time_loader(loader, args.images)

    ours = BatchLoader(train, args.batch_size, shuffle=True, augment="standard",
                       normalize=norm, seed=0)
    time_loader(ours, 4 * args.batch_size)  # warm-up
    epoch_rate = time_loader(ours, len(train))
    results["thresher BatchLoader (device, batched)"] = epoch_rate

    reference = results["PIL + DataLoader, num_workers=2"]
    print(f"{args.dataset} train, {len(train)} images, batch {args.batch_size}, standard "
          f"augmentation, {torch.get_num_threads()} torch threads")
    print(f"{'pipeline':44s} {'images/s':>10s} {'vs workers=2':>13s}")
    for name, rate in results.items():
        print(f"{name:44s} {rate:10.0f} {rate / reference:12.1f}x")
    print(f"target: thresher >= 10x the num_workers=2 figure -> "
          f"{'met' if epoch_rate >= 10 * reference else 'NOT met'}")


if __name__ == "__main__":
    main()
