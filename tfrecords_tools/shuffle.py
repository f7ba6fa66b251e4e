"""Which shard a record goes to, and where in it: a seeded hash of its key (the member's
name), as TFDS assigns examples to shards and shuffles within them.

A record's shard and place depend only on its own key, the split and the seed, never on
how many records the archive holds or in what order they come, so the shard of a member
is known the moment its header is read: no count, and no index of the archive, is needed
before the pass.  Shard i holds the keys whose hash falls in the i-th of `num_shards`
equal ranges; within it the records go in hash order (classes mixed in every shard), or
by name in the unlabelled test split, whose order is its file names'.
"""

from __future__ import annotations

import hashlib

#: Part of every split's job record: a change here changes what the shards contain.
PLAN = "blake2b-64 of split:seed, name; shard by range, hash order within"


def key_hash(split: str, seed: int, key: str) -> int:
    """A 64-bit hash of `key`, the same in every run, process and machine (unlike hash())."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8,
                                          key=f"{split}:{seed}".encode()).digest(), "big")


def shard_of(hashed: int, num_shards: int) -> int:
    """The shard whose range of the 64-bit hashes holds `hashed`."""
    return hashed * num_shards >> 64


def in_shard_order(split: str, seed: int, keys: list[str]) -> list[str]:
    """`keys` of one shard in the order their records are written."""
    if split == "test":
        return sorted(keys)
    return sorted(keys, key=lambda key: (key_hash(split, seed, key), key))
