"""The shards of a split, each from its complete bucket: a worker reads the bucket, puts
its records in the shard's order (by their names' hash), writes `.<shard>.tmp` and
renames it; then this process writes the shard's receipt (`manifest`), naming what was
skipped, repaired or replaced.  A name that comes twice is an error here."""

from __future__ import annotations

import collections
from pathlib import Path

from tfrecords_tools import manifest, schema, shuffle, worker
from tfrecords_tools.errors import ArchiveError, OutputError, WorkerError
from tfrecords_tools.plan import ShardPlan, SplitPlan
from tfrecords_tools.summary import Summary


def write_shards(output: Path, plan: SplitPlan, shards: list[ShardPlan], pool, window: int,
                  bar, summary: Summary) -> None:
    """Writes each shard of `shards` from its complete bucket (in the workers), then its
    receipt."""
    buckets = manifest.state_dir(output) / "buckets"
    pending: collections.deque = collections.deque()
    todo = collections.deque(shards)
    while todo or pending:
        while todo and len(pending) < window:
            shard = todo.popleft()
            args = (str(buckets / shard.name), str(output / f".{shard.name}.tmp"),
                    str(output / shard.name), None if plan.walk else len(shard.members),
                    plan.split, plan.job["seed"])
            pending.append((shard, pool.submit(worker.write_shard, args,
                                               [str(output / shard.name)])))
        shard, ticket = pending.popleft()
        try:
            facts = pool.result(ticket)
        except WorkerError as error:
            if not isinstance(error.__cause__, OSError):
                raise
            done = summary.shards_written[plan.split] + summary.shards_kept[plan.split]
            raise OutputError(f"writing {output / shard.name}: {error.__cause__}; the {done} "
                              f"{plan.split} shards finished are kept, rerun to finish after "
                              f"fixing this (a full disk?)") from error
        if "duplicates" in facts:
            raise ArchiveError(f"{plan.archive}: member {facts['duplicates'][0]} appears more "
                               f"than once")
        replaced = _replaced(plan, shard)
        receipt = {
            "job": plan.job_id, "shard": shard.name, "records": facts["records"],
            "bytes": facts["bytes"], "mtime_ns": facts["mtime_ns"], "sha256": facts["sha256"],
            "class_counts": {str(k): v for k, v in facts["class_counts"].items()},
            "skipped": [{"member": name, "reason": _noted(replaced.get(name), reason)}
                        | ({"synset": plan.classes.wnids[label]}
                           if label != schema.UNLABELED else {})
                        for name, label, reason in facts["skipped"]],
            "repaired": _repairs(facts, replaced)}
        manifest.write_receipt(output, receipt)
        (buckets / shard.name).unlink(missing_ok=True)
        summary.shards_written[plan.split] += 1
        bar.update(1)


def _replaced(plan: SplitPlan, shard: ShardPlan) -> dict[str, str]:
    """The shard's images that patch_images.tar replaced: base name -> what replaced it."""
    if not plan.patches:
        return {}
    unused = set(plan.job.get("incomplete", {}).get("unused_patches", ()))
    seed, count = plan.job["seed"], plan.job["num_shards"]
    return {name: f"replaced by {plan.patch_tar.name} member {patch.member}"
            for name, patch in plan.patches.items() if patch.member not in unused
            and shuffle.shard_of(shuffle.key_hash(plan.split, seed, name), count) == shard.index}


def _noted(replacement: str | None, note: str) -> str:
    return f"{replacement}; {note}" if replacement and note else replacement or note


def _repairs(facts: dict, replaced: dict[str, str]) -> list[dict]:
    """A receipt's repairs: the workers' (in shard order), each replacement from the
    patch tar noted, then the replaced images that needed no other repair, by name."""
    skipped = {name for name, _, _ in facts["skipped"]}
    repaired = dict(facts["repaired"])
    return ([{"member": name, "repair": _noted(replaced.get(name), repair)}
             for name, repair in facts["repaired"]]
            + [{"member": name, "repair": replacement}
               for name, replacement in sorted(replaced.items())
               if name not in repaired and name not in skipped])
