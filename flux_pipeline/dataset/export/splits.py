"""Train/validation assignment by a hash of the prompt id: an image and its Redux variations (which
share their parent's prompt id) are always on the same side, and the same prompt id lands on the
same side in every export with the same validation fraction."""

from __future__ import annotations

import hashlib

TRAIN, VALIDATION = "train", "validation"
SPLITS = (TRAIN, VALIDATION)


def split_of(prompt_id: str, validation_fraction: float) -> str:
    position = int.from_bytes(hashlib.sha256(prompt_id.encode()).digest()[:8], "big") / 2**64
    return VALIDATION if position < validation_fraction else TRAIN
