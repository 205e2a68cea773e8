"""Near-duplicate lookup among 64-bit perceptual hashes within a Hamming distance d, without comparing
against every stored hash: two hashes that differ in at most d bits agree exactly on at least one of
d + 1 disjoint bit bands (pigeonhole), so only hashes sharing a band value are compared."""

from __future__ import annotations

import itertools
from collections import defaultdict

from ..files.image_hashes import HASH_BITS


class NearDuplicateIndex:
    def __init__(self, distance: int):
        self.distance = distance
        edges = [HASH_BITS * i // (distance + 1) for i in range(distance + 2)]
        self._bands = list(itertools.pairwise(edges))
        self._buckets: dict[tuple[int, int], list[int]] = defaultdict(list)

    def _keys(self, value: int) -> list[tuple[int, int]]:
        return [(low, (value >> low) & ((1 << (high - low)) - 1)) for low, high in self._bands]

    def near(self, value: int) -> bool:
        """Whether a stored hash is within the distance of `value`."""
        return any(
            (value ^ stored).bit_count() <= self.distance
            for key in self._keys(value)
            for stored in self._buckets.get(key, ())
        )

    def add(self, value: int) -> None:
        for key in self._keys(value):
            self._buckets[key].append(value)
