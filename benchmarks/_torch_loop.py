"""A plain PyTorch eager training loop (LibMTL-style) on the end-to-end benchmark's data, run by
``train_throughput.py --end-to-end`` in the benchmark's own venv (``benchmarks/.venv-torch``, never a project
dependency). Prints one JSON object: per-epoch wall and CPU seconds, rows per epoch.

The same work per epoch as ``mtl train`` on that data: rows with no label at all dropped, an 80/10/10 split; every
epoch a fresh permutation, batches sliced from the column tensors by index, missing inputs filled with the training
mean and standardised per batch, a trunk of two 64-unit ReLU layers and one linear output per task, the binary
task's cross-entropy and the regression task's squared error (on the standardised target) each averaged over the
batch's labelled rows and summed, Adam 1e-3; then one pass over the validation split.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn


def masked_mean(per_row: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (per_row * mask).sum() / mask.sum().clamp(min=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", help="the .npz the benchmark wrote (x, clicked, amount)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    data = np.load(args.data)
    x, clicked, amount = data["x"], data["clicked"], data["amount"]
    keep = ~(np.isnan(clicked) & np.isnan(amount))
    x, clicked, amount = x[keep], clicked[keep], amount[keep]
    order = np.random.default_rng(args.seed).permutation(len(x))
    train, val = order[: int(0.8 * len(x))], order[int(0.8 * len(x)): int(0.9 * len(x))]
    mean, std = np.nanmean(x[train], axis=0), np.nanstd(x[train], axis=0)
    target_mean, target_std = np.nanmean(amount[train]), np.nanstd(amount[train])

    def tensors(rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        return (torch.from_numpy(x[rows]).float(), torch.from_numpy(np.nan_to_num(clicked[rows])).float(),
                torch.from_numpy(~np.isnan(clicked[rows])).float(),
                torch.from_numpy(np.nan_to_num((amount[rows] - target_mean) / target_std)).float(),
                torch.from_numpy(~np.isnan(amount[rows])).float())

    mean_t, std_t = torch.from_numpy(mean).float(), torch.from_numpy(std).float()
    trunk = nn.Sequential(nn.Linear(x.shape[1], 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
    heads = nn.ModuleDict({"clicked": nn.Linear(64, 1), "amount": nn.Linear(64, 1)})
    params = list(trunk.parameters()) + list(heads.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)

    def forward(xb: torch.Tensor, yc, mc, ya, ma) -> torch.Tensor:
        xb = (torch.where(torch.isnan(xb), mean_t, xb) - mean_t) / std_t
        shared = trunk(xb)
        bce = nn.functional.binary_cross_entropy_with_logits(heads["clicked"](shared).squeeze(1), yc,
                                                             reduction="none")
        mse = (heads["amount"](shared).squeeze(1) - ya) ** 2
        return masked_mean(bce, mc) + masked_mean(mse, ma)

    train_t, val_t = tensors(train), tensors(val)
    epochs = []
    for _ in range(args.epochs):
        wall, cpu = time.perf_counter(), time.process_time()
        trunk.train()
        permutation = torch.randperm(len(train))
        for start in range(0, len(train), args.batch_size):
            index = permutation[start:start + args.batch_size]
            loss = forward(*(t[index] for t in train_t))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        trunk.eval()
        with torch.no_grad():
            for start in range(0, len(val), args.batch_size):
                forward(*(t[start:start + args.batch_size] for t in val_t))
        epochs.append({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu})
    print(json.dumps({"rows": len(train), "epochs": epochs, "torch": torch.__version__,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
