"""The stand-in for timm's train.py in benchmarks/end_to_end.py: plain PyTorch + timm doing
the same work as ``python train.py`` (a folder of class sub-folders, a seeded 70/15/15
split, resize, resnet18 without pretrained weights, AdamW, cross-entropy, validation after
every epoch, one test pass), with no checks, no metrics library and no tracking. Writes the
time of each phase (``time.time()``) to a JSON file.

    python benchmarks/plain_train.py DATA_DIR RECORD.json --image-size 32 --batch-size 64 \\
        --epochs 3 --workers 2
"""

from __future__ import annotations

import json
import sys
import time

record = {"start_imports": time.time()}

import argparse  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402


class Folder(Dataset):
    def __init__(self, items: list[tuple[str, int]], size: int) -> None:
        self.items, self.size = items, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, label = self.items[i]
        image = Image.open(path).convert("L").resize((self.size, self.size), Image.BILINEAR)
        array = np.asarray(image, dtype=np.float32)[None] / 255.0
        return torch.from_numpy((array - 0.5) / 0.5), label


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir")
    parser.add_argument("record")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    record["imports_done"] = time.time()

    classes = sorted(os.listdir(args.data_dir))
    items = [
        (os.path.join(args.data_dir, c, f), k)
        for k, c in enumerate(classes)
        for f in sorted(os.listdir(os.path.join(args.data_dir, c)))
    ]
    order = np.random.default_rng(42).permutation(len(items))
    n_val = n_test = int(0.15 * len(items))
    splits = {
        "val": [items[i] for i in order[:n_val]],
        "test": [items[i] for i in order[n_val : n_val + n_test]],
        "train": [items[i] for i in order[n_val + n_test :]],
    }
    loaders = {
        name: DataLoader(
            Folder(part, args.image_size),
            batch_size=args.batch_size,
            shuffle=name == "train",
            drop_last=name == "train",
            num_workers=args.workers,
        )
        for name, part in splits.items()
    }
    torch.manual_seed(42)
    model = timm.create_model("resnet18", pretrained=False, in_chans=1, num_classes=len(classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    record["data_ready"] = time.time()

    def evaluate(name: str) -> float:
        model.eval()
        right = total = 0
        with torch.no_grad():
            for images, labels in loaders[name]:
                right += int((model(images).argmax(1) == labels).sum())
                total += len(labels)
        return right / total

    record["epochs"] = []
    for _ in range(args.epochs):
        model.train()
        for images, labels in loaders["train"]:
            optimizer.zero_grad()
            loss_fn(model(images), labels).backward()
            optimizer.step()
            record.setdefault("first_step_end", time.time())
        record["val_accuracy"] = evaluate("val")
        record["epochs"].append(time.time())
    record["test_accuracy"] = evaluate("test")
    record["test_end"] = time.time()
    with open(args.record, "w") as out:
        json.dump(record, out)


if __name__ == "__main__":
    sys.exit(main())
