"""The shard plan: a record's shard and place come from a seeded hash of its name alone."""

import subprocess
import sys

from tests.tfrecords_tools.test_convert import _records
from tfrecords_tools import schema
from tfrecords_tools.shuffle import in_shard_order, key_hash, shard_of


def test_the_hash_is_the_same_in_another_process():
    code = ("from tfrecords_tools.shuffle import key_hash; "
            "print(key_hash('train', 0, 'n01440764_1.JPEG'))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "1", "PATH": ""})
    assert int(other.stdout) == key_hash("train", 0, "n01440764_1.JPEG")
    assert key_hash("train", 1, "n01440764_1.JPEG") != key_hash("train", 0, "n01440764_1.JPEG")
    assert key_hash("validation", 0, "a") != key_hash("train", 0, "a")


def test_a_shard_does_not_depend_on_the_other_members():
    # What lets the converter place a member the moment it reads its header.
    names = [f"n01440764_{i}.JPEG" for i in range(2000)]
    alone = {name: shard_of(key_hash("train", 0, name), 16) for name in names[:100]}
    assert {name: shard_of(key_hash("train", 0, name), 16) for name in names} | alone == {
        name: shard_of(key_hash("train", 0, name), 16) for name in names}
    sizes = [sum(shard_of(key_hash("train", 0, n), 16) == i for n in names) for i in range(16)]
    assert min(sizes) > 2000 / 16 * 0.7 and max(sizes) < 2000 / 16 * 1.3
    assert in_shard_order("test", 0, ["b", "c", "a"]) == ["a", "b", "c"]


def test_converted_shards_follow_the_plan(converted_shards):
    for split in ("train", "validation", "test"):
        records = _records(converted_shards, split)
        names = [r["image/filename"].decode() for r in records]
        shards = sorted({r["shard"] for r in records})
        count = int(shards[0].rsplit("-", 1)[1])
        for record, name in zip(records, names, strict=True):
            assert schema.shard_name(split, shard_of(key_hash(split, 0, name), count),
                                     count) == record["shard"]
        for shard in shards:
            ours = [n for r, n in zip(records, names, strict=True) if r["shard"] == shard]
            assert ours == in_shard_order(split, 0, ours)
