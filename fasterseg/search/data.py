"""trainA / trainB: disjoint random halves of the training split (weights / architecture)."""

from __future__ import annotations

import torch

from fasterseg.errors import UserError


def split_indices(n: int, seed: int) -> tuple[list[int], list[int]]:
    """Disjoint random halves trainA (weights) / trainB (architecture) of ``n`` samples."""
    if n < 2:
        raise UserError(f"the training split needs at least 2 samples for trainA/trainB, got {n}")
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g).tolist()
    half = n // 2
    return sorted(perm[:half]), sorted(perm[half:])


class IndexSubset(torch.utils.data.Dataset):
    """A subset that forwards ``(index, aug_seed)`` keys of the iteration sampler."""

    def __init__(self, dataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)
        self.cfg = getattr(dataset, "cfg", None)
        self.label_set = getattr(dataset, "label_set", None)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item):
        if isinstance(item, tuple):
            return self.dataset[(self.indices[int(item[0])], *item[1:])]
        return self.dataset[self.indices[int(item)]]
