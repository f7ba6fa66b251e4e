"""Image archives and folders to sharded TFRecords: one forward pass per archive,
deterministic, parallel, resumable.

A source (`sources.find_source`: ILSVRC-2012 or ILSVRC-2010 archives, Kaggle's layout,
a tar of per-class tars, image folders) gives its splits as plans (`plan`,
`archive_plans`, `folders`); then one machinery carries out any plan:

1. Plan.  A split's shards and the members of each, or, for a devkit's train and val
   tars read with no index, each image's shard from a seeded hash of its name.  A bad
   archive fails here, before any work.  The plan, and so every shard's bytes, depends
   only on the source and the options of what to write, never on the number of
   processes or machines.
2. Forward pass (`passes`): the archive read once, front to back, into a buffer shared
   with the worker processes, which file each finished record in its shard's bucket;
   checkpointed, so a rerun reads on from the last checkpoint.
3. Shards (`shards`): each from its complete bucket, in the shard's order, then its
   receipt.
4. Merge: once every shard of a split has a receipt, `manifest.json` is written.

A rerun keeps the shards whose receipt matches the job and the file's size and mtime,
so a crash or `kill -9` at any moment costs at most the work since the last
checkpoint.  With `num_workers` K and `worker_index` I, this machine converts every
K-th shard from I (reading the whole archive, converting only its shards' images);
any machine then merges.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import shutil
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tfrecords_tools import manifest, passes, schema, worker
from tfrecords_tools.archive_plans import plan_archives
from tfrecords_tools.archives import Archives
from tfrecords_tools.base import files
from tfrecords_tools.class_tars import ClassTarSource, plan_class_tars
from tfrecords_tools.devkit import ClassIndex
from tfrecords_tools.errors import OutputError, WorkerError
from tfrecords_tools.folders import FolderSource, plan_folders
from tfrecords_tools.images import ImageOptions
from tfrecords_tools.options import ConvertOptions
from tfrecords_tools.plan import ShardPlan, SplitPlan, before_pass
from tfrecords_tools.pool import InlinePool, Pool
from tfrecords_tools.shards import write_shards
from tfrecords_tools.sources import find_source
from tfrecords_tools.summary import Summary

#: Each kind of source and how it gives its splits' plans.
PLANNERS = {Archives: plan_archives, ClassTarSource: plan_class_tars,
            FolderSource: plan_folders}


def _claim_output(output: Path, plan: SplitPlan, allow_incomplete: bool = False) -> None:
    """Refuses a directory that holds this split's shards from another conversion, or
    other splits written with another label offset."""
    for split in schema.SPLITS:
        other = manifest.job_path(output, split)
        if split != plan.split and other.exists():
            theirs = json.loads(other.read_text()).get("label_offset", 0)
            if theirs != plan.job["label_offset"]:
                raise OutputError(f"{output} holds {split} shards with --label-offset {theirs}; "
                                  f"convert {plan.split} with the same offset, or into another "
                                  f"directory")
    job_path = manifest.job_path(output, plan.split)
    if job_path.exists():
        theirs = json.loads(job_path.read_text())
        if plan.walk and before_pass(theirs) == plan.job:
            # A finished pass's record: its findings are those of this archive (unless
            # they must be found again to refuse them).
            if "images" in theirs and ("incomplete" not in theirs or allow_incomplete):
                plan.job.update(theirs)
            return
        if theirs != plan.job:
            differences = ", ".join(_differences(theirs, plan.job))
            raise OutputError(f"{output} holds {plan.split} shards of another conversion "
                              f"({differences or 'the archive changed'}); choose another output "
                              f"directory or remove them")
        return
    strangers = sorted(output.glob(schema.shard_pattern(plan.split)))
    if strangers:
        raise OutputError(f"{output} holds {plan.split} shards this converter has no record "
                          f"of (e.g. {strangers[0].name}); choose another output directory or "
                          f"remove them")
    files.write_atomically(job_path, json.dumps(plan.job, indent=1, sort_keys=True))


def _claim_labels(output: Path, classes: ClassIndex) -> None:
    path = output / schema.LABELS
    if path.exists():
        if path.read_text(encoding="utf-8") != classes.labels_txt():
            raise OutputError(f"{path} lists other classes than these archives; choose "
                              f"another output directory")
    else:
        files.write_atomically(path, classes.labels_txt())


def _differences(theirs: dict, ours: dict) -> list[str]:
    """How a recorded conversion's job differs from this one's, key by key (a nested
    record, as the archive's, by its own keys)."""
    found = []
    for key, value in ours.items():
        old = theirs.get(key)
        if key in manifest.FINDINGS or old == value:
            continue
        if isinstance(old, dict) and isinstance(value, dict):
            found += [f"{key} {part}: {old.get(part)!r} there, {value.get(part)!r} here"
                      for part in sorted(set(old) | set(value)) if old.get(part) != value.get(part)]
        else:
            found.append(f"{key}: {old!r} there, {value!r} here")
    return found


def _remove_our_temporaries(output: Path, shards: Sequence[ShardPlan]) -> None:
    """The temporaries a killed run of ours left: its shards' and its atomic writes'."""
    for shard in shards:
        (output / f".{shard.name}.tmp").unlink(missing_ok=True)
    host = socket.gethostname()
    for directory in (output, manifest.state_dir(output)):
        for path in directory.glob(f".*.{host}-*.tmp"):
            pid = path.name.rsplit("-", 1)[1].removesuffix(".tmp")
            alive = pid.isdigit() and (int(pid) == os.getpid() or _alive(int(pid)))
            if not alive:
                path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _usable_cpus() -> int:
    # The cores this process may run on, not the machine's: schedulers pin jobs.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def convert(output: str | Path, source: Archives | ClassTarSource | FolderSource | str | Path,
            options: ConvertOptions | None = None, *, progress: bool = True,
            **fields: Any) -> Summary:
    """Converts the splits of `source` (`options.splits`, default every split it has)
    into shards in `output`, resuming whatever an earlier run finished.  `source` is an
    `Archives` (ILSVRC-2012 or ILSVRC-2010, or a tar of per-class tars), a
    `FolderSource` (image folders), or a path that `sources.find_source` tells which of
    them it is.  Takes `options=ConvertOptions(...)` or its fields as keywords
    (`convert(out, path, size=64, processes=1)`).

    `processes` decode in parallel (default: every usable core); they are spawned, so a
    script calling this needs the usual `if __name__ == "__main__":` guard.  With
    `num_workers` > 1 this call converts only the shards of `worker_index`; the call
    that finds all shards done writes the manifest (or run `merge`).  An archive short
    of what the devkit lists is an error unless `allow_incomplete`, which converts what
    is there and records the shortfall in the manifest.
    """
    from tfrecords_tools.base.progress import tqdm

    if options is None:
        options = ConvertOptions(**fields)
    elif fields:
        raise TypeError("convert takes options or their fields, not both")
    started = time.monotonic()
    if type(source) not in PLANNERS:
        source = find_source(source)
    image_options = ImageOptions(options.size, options.crop, options.quality)
    processes = options.processes or _usable_cpus()
    output = Path(output)
    # What this call creates, removed again if it refuses the source before any work.
    created = [d for d in (output, manifest.state_dir(output)) if not d.exists()]
    manifest.state_dir(output).mkdir(parents=True, exist_ok=True)
    slots = 2 * processes + 2  # enough read-ahead to keep every worker busy
    shared = (multiprocessing.get_context("spawn").RawArray(
        ctypes.c_ubyte, slots * passes.SLOT_BYTES) if processes > 1
        else bytearray(slots * passes.SLOT_BYTES))
    summary = Summary(output=output)

    # The workers start while the archives are indexed.
    planned = False
    try:
        with (Pool(processes, worker.initialize, (shared,)) if processes > 1
              else InlinePool(worker.initialize, (shared, False))) as pool:
            # Plan everything first: a bad archive fails here, before any work is done.
            plans = PLANNERS[type(source)](source, output, options, progress)
            classes = next((plan.classes for plan in plans if plan.classes), None)
            if classes is not None:
                _claim_labels(output, classes)
            for plan in plans:
                _claim_output(output, plan, options.allow_incomplete)
                if "incomplete" in plan.job:
                    summary.incomplete.append(f"{plan.split}: " + ", ".join(
                        str(what) if kind == "damage" else f"{kind} {json.dumps(what)}"
                        for kind, what in plan.job["incomplete"].items()))
            planned = True

            ours = [(plan, shard) for plan in plans for shard in plan.shards]
            ours = ours[options.worker_index::options.num_workers]
            summary.splits = [plan.split for plan in plans]
            runs = []
            for plan in plans:
                todo = []
                for shard in (s for p, s in ours if p is plan):
                    if manifest.read_receipt(output, shard.name, plan.job_id):
                        summary.shards_kept[plan.split] += 1
                    else:
                        todo.append(shard)
                if todo:
                    runs.append(passes.start(output, plan, todo, passes.state_path(
                        output, plan.split, options.num_workers, options.worker_index)))
            with tqdm(total=sum(run.total for run in runs), unit="img", desc="converting",
                      disable=not progress, smoothing=0.05) as bar:
                for run in runs:
                    bar.set_postfix_str(run.plan.split)
                    pool.broadcast(worker.configure, (
                        run.plan.classes.wnids if run.plan.classes else (),
                        run.plan.classes.names if run.plan.classes else (), image_options,
                        options.label_offset))
                    run.run(pool, memoryview(shared).cast("B"), slots,
                            options.checkpoint_seconds, bar, summary)
                    run.finish(options.allow_incomplete, summary)
            with tqdm(total=sum(len(run.shards) for run in runs), unit="shard",
                      desc="writing shards", disable=not progress) as bar:
                for run in runs:
                    unfinished = [s for s in run.shards if not manifest.read_receipt(
                        output, s.name, run.plan.job_id)]
                    write_shards(output, run.plan, unfinished, pool, 2 * processes, bar,
                                 summary)
                    run.state_path.unlink(missing_ok=True)
    except WorkerError as error:
        raise WorkerError(f"{error}; the finished shards are kept and a rerun of the same "
                          f"command resumes from the last checkpoint") from error
    except Exception:  # not Ctrl-C: an index being built is kept for the rerun
        if not planned:  # refused before any work: leave no directory of ours behind
            for directory in reversed(created):
                shutil.rmtree(directory, ignore_errors=True)
        raise
    _remove_our_temporaries(output, [shard for _, shard in ours])
    summary.merged = manifest.merge(output)
    summary.seconds = time.monotonic() - started
    return summary
