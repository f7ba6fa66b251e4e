"""How the converter reads its archive, and what the parent process costs per image.

For each version (this tree, and `--baseline` trees such as a git worktree of an earlier
commit), on the same generated train tar (`convert.py`'s photo-like JPEGs):

- read order, from the outside: the real CLI runs under `strace -f`; every read of the
  archive (read, pread64, preadv, with lseek and open tracked) is put in time order,
  and a read is in forward order when it starts at or after the end of the previous
  one.  Reported: the fraction of the archive's bytes read in forward order, the number
  of backward jumps, and the bytes read in all (the index pass reads only headers);
- speed, without strace: wall time of `convert()` in a child process, and the parent
  process's own CPU time per image (getrusage RUSAGE_SELF around the call), the work
  that caps a run however many cores decode.

`--walk PER_CLASS` measures the same speed on the one-pass path instead: sample train
and val tars with a devkit (10 classes, PER_CLASS images each), read with no index.

    python benchmarks/convert_at_scale.py --images 5000 --baseline /tmp/base --repeats 3
    python benchmarks/convert_at_scale.py --walk 1000 --baseline /tmp/base --repeats 5
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from convert import make_data

_CALL = re.compile(r"^(\d+)\s+[\d.]+\s+(\w+)\((.*)\)\s+=\s+(-?\d+)")
_FD = re.compile(r"^(\d+)<([^>]*)>")


def traced_reads(command: list[str], environment: dict, archive: Path,
                 log: Path) -> list[tuple[int, int]]:
    """(offset, bytes) of every read of `archive` by `command` and its children, in
    time order.  Run from the log's directory: the current directory comes first on
    `python -m`'s path, before PYTHONPATH."""
    subprocess.run(["strace", "-f", "-ttt", "-y", "-s", "0", "-o", str(log), "-e",
                    "trace=read,pread64,preadv,preadv2,lseek", *command], env=environment,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   cwd=log.parent)
    target = str(archive.resolve())
    pending: dict[str, str] = {}
    positions: dict[tuple[str, str], int] = {}
    reads = []
    for line in log.read_text().splitlines():
        pid = line.split(None, 1)[0]
        if line.endswith("<unfinished ...>"):
            pending[pid] = line.removesuffix("<unfinished ...>")
            continue
        if "resumed>" in line:
            line = pending.pop(pid, "") + line.split("resumed>", 1)[1]
        match = _CALL.match(line)
        if not match:
            continue
        _, name, arguments, result = match.groups()
        fd = _FD.match(arguments)
        if not fd or fd[2] != target:
            continue
        key, result = (pid, fd[1]), int(result)
        fields = [f.strip() for f in arguments.split(",")]
        if name == "lseek":
            positions[key] = result
        elif result > 0 and name == "read":
            offset = positions.get(key, 0)
            reads.append((offset, result))
            positions[key] = offset + result
        elif result > 0:  # pread64(fd, buf, n, offset), preadv(fd, [...], count, offset)
            reads.append((int(fields[-1] if name != "preadv2" else fields[-2]), result))
    return reads


def read_order(reads: list[tuple[int, int]]) -> dict:
    """`forward`: the fraction of the bytes read by reads that start at or after the end
    of the previous one; `beyond`: the fraction of the bytes read at or beyond the
    furthest offset already read (a second pass over the archive counts as backward);
    `reads`: the read system calls."""
    total = forward = beyond = jumps = 0
    end = furthest = 0
    for offset, size in reads:
        total += size
        if offset >= end:
            forward += size
        else:
            jumps += 1
        beyond += max(0, offset + size - max(offset, furthest))
        end = offset + size
        furthest = max(furthest, end)
    return {"bytes": total, "forward": forward / total if total else 0.0,
            "beyond": beyond / total if total else 0.0, "jumps": jumps, "reads": len(reads)}


def read_orders(per_class: int) -> None:
    """Read order of the train and val tars (with a devkit) at -j 1 and -j 2."""
    from tfrecords_tools.sample import make_sample_archives

    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        archives = make_sample_archives(workdir / "archives", train_per_class=per_class,
                                        val_per_class=per_class)
        environment = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]),
                           TF_CPP_MIN_LOG_LEVEL="2")
        print(f"{'split':<12}{'-j':>3}{'MB':>7}{'beyond furthest':>16}{'forward':>9}"
              f"{'back jumps':>11}{'read calls':>11}")
        for split, archive in (("train", archives.train), ("validation", archives.validation)):
            for jobs in (1, 2):
                output = workdir / f"out-{split}-{jobs}"
                order = read_order(traced_reads(
                    [sys.executable, "-m", "tfrecords_tools", "convert", str(archives.directory),
                     str(output), "--splits", split, f"--{split}-shards", "4", "--quiet",
                     "-j", str(jobs)], environment, archive, workdir / "strace.log"))
                print(f"{split:<12}{jobs:>3}{archive.stat().st_size / 1e6:>7.1f}"
                      f"{order['beyond']:>15.2%} {order['forward']:>8.2%} {order['jumps']:>10}"
                      f"{order['reads']:>11}")


def child(output: Path, archives: Path, processes: int, split: str = "train") -> None:
    from tfrecords_tools.convert import convert

    shards = 16 if split == "train" else 4
    # A tree from before ConvertOptions (8ef7408) took num_shards.
    shard_count = ({"num_shards": {split: shards}}
                   if "num_shards" in inspect.signature(convert).parameters
                   else {f"{split}_shards": shards})
    start, own = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    convert(output, archives, splits=[split], **shard_count, processes=processes,
            progress=False)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wall": wall, "parent_cpu": after.ru_utime + after.ru_stime
                      - own.ru_utime - own.ru_stime}))


def speed(tree: Path, output: Path, archives: Path, processes: int, repeats: int,
          split: str = "train") -> tuple[float, float]:
    """Median wall seconds and parent CPU seconds of `repeats` conversions by `tree`."""
    environment = dict(os.environ, PYTHONPATH=str(tree.resolve()), TF_CPP_MIN_LOG_LEVEL="2")
    runs = []
    for repeat in range(repeats):
        result = subprocess.run(
            [sys.executable, __file__, "--child", str(output.with_name(
                f"{output.name}-{repeat}")), str(archives), "--split", split,
             "--processes", str(processes)], env=environment, check=True,
            capture_output=True, text=True, cwd=output.parent)
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return (statistics.median(r["wall"] for r in runs),
            statistics.median(r["parent_cpu"] for r in runs))


def walk_speeds(per_class: int, trees: list[Path], processes: int, repeats: int) -> None:
    """The one-pass path's speed: sample tars with a devkit, each split, each tree."""
    from keras_alexnet.hardware import cpu_model
    from tfrecords_tools.sample import make_sample_archives

    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        archives = make_sample_archives(workdir / "archives", train_per_class=per_class,
                                        val_per_class=per_class)
        images = 10 * per_class
        print(f"{images} images a split (sample tars with a devkit, read with no index), "
              f"{processes} processes, {cpu_model()}; medians of {repeats} runs")
        print(f"{'version':<24}{'split':<12}{'wall s':>8}{'img/s':>7}{'parent ms/img':>14}")
        for split in ("train", "validation"):
            for tree in trees:
                wall, parent = speed(tree, workdir / f"out-{tree.name}-{split}",
                                     archives.directory, processes, repeats, split)
                print(f"{tree.name:<24}{split:<12}{wall:>8.2f}{images / wall:>7.0f}"
                      f"{parent / images * 1e3:>14.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--processes", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=3, help="speed runs; medians quoted")
    parser.add_argument("--baseline", type=Path, nargs="*", default=[],
                        help="other source trees to measure the same way")
    parser.add_argument("--read-order", type=int, metavar="PER_CLASS",
                        help="only the read order of sample train and val tars with a devkit "
                             "(10 classes, PER_CLASS images each) at -j 1 and -j 2")
    parser.add_argument("--walk", type=int, metavar="PER_CLASS",
                        help="only the speed of the one-pass path: sample train and val tars "
                             "with a devkit (10 classes, PER_CLASS images each)")
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--split", default="train", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read_order:
        read_orders(args.read_order)
        return
    if args.child:
        child(*args.child, args.processes, args.split)
        return
    if args.walk:
        walk_speeds(args.walk, [Path(__file__).parents[1], *args.baseline], args.processes,
                    args.repeats)
        return
    from keras_alexnet.hardware import cpu_model

    cpu = cpu_model()
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        make_data(workdir, args.images)
        archive = workdir / "ILSVRC2012_img_train.tar"
        print(f"{args.images} JPEGs, {archive.stat().st_size / 1e6:.0f} MB train tar, "
              f"{args.processes} processes, {cpu}; speed: medians of {args.repeats} runs")
        print(f"{'version':<24}{'beyond furthest':>16}{'forward bytes':>14}{'back jumps':>11}"
              f"{'read calls':>11}{'MB read':>9}"
              f"{'wall s':>8}{'img/s':>7}{'parent ms/img':>14}")
        for tree in [Path(__file__).parents[1], *args.baseline]:
            environment = dict(os.environ, PYTHONPATH=str(tree.resolve()),
                               TF_CPP_MIN_LOG_LEVEL="2")
            output = workdir / f"traced-{tree.name}"
            reads = traced_reads([sys.executable, "-m", "tfrecords_tools", "convert",
                                  str(workdir), str(output), "--splits", "train",
                                  "--train-shards", "16", "--quiet", "-j",
                                  str(args.processes)], environment, archive,
                                 workdir / "strace.log")
            order = read_order(reads)
            wall, parent = speed(tree, workdir / f"run-{tree.name}", workdir, args.processes,
                                 args.repeats)
            print(f"{tree.name:<24}{order['beyond']:>15.2%} {order['forward']:>13.2%} "
                  f"{order['jumps']:>10}{order['reads']:>11}{order['bytes'] / 1e6:>9.0f}"
                  f"{wall:>8.2f}{args.images / wall:>7.0f}"
                  f"{parent / args.images * 1e3:>14.3f}")


if __name__ == "__main__":
    main()
