"""`python -m keras_alexnet`: one subcommand per module of this package.

Each module has a docstring (its first sentence is the help), `add_arguments(parser)`,
`run(args) -> int` and optionally `check(args)` (its paths, checked before TensorFlow
loads); heavy imports stay inside `run` so that `--help` and mistakes are fast.  Errors,
Ctrl-C and SIGTERM end a command as `tfrecords_tools.base.cli` says, for all three tools.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil

from tfrecords_tools.base.cli import add_verbose_argument, require_paths, run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m keras_alexnet",
        description="AlexNet (Krizhevsky et al., 2012): train, evaluate, export, predict, "
                    "draw the paper's figures, or run the whole demo.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        # The docstring's first sentence, whole (its first line may end mid-sentence).
        paragraph = " ".join((module.__doc__ or "").strip().split("\n\n")[0].split())
        summary = paragraph.split(". ")[0].rstrip(".") + "."
        sub = subparsers.add_parser(module_info.name.replace("_", "-"), help=summary,
                                    description=module.__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        add_verbose_argument(sub)
        sub.set_defaults(run=module.run, check=getattr(module, "check", None))
    return parser


def add_epoch_argument(parser: argparse.ArgumentParser) -> None:
    """`--epoch`: which checkpoint of a training run's model directory a command uses."""
    parser.add_argument("--epoch", default="best", metavar="best|latest|N",
                        help="which checkpoint of a model directory: best (the best "
                             "validation top-1 epoch's, kept whatever --keep-checkpoints "
                             "says), latest, or an epoch number (default: best)")


def require_checkpoints(sources: list[str | None]) -> None:
    """Each source that is a path (not a bare word, which may name published weights)
    exists: a run directory or a .keras file."""
    require_paths(*(source for source in sources if source and (
        os.sep in source or "." in os.path.basename(source) or os.path.exists(source))),
        what="checkpoint or model directory")


def chosen_checkpoints(sources: list[str], epoch: str) -> list[str]:
    """Each source (a model directory, a .keras file, weights by name) as the checkpoint
    it means, a model directory's by `--epoch`; each choice said on stderr."""
    import sys

    from keras_alexnet import checkpoints, pretrained

    chosen = []
    for source in sources:
        path, line = checkpoints.choose(pretrained.resolve(source), epoch)
        print(f"{source}: {line}", file=sys.stderr)
        chosen.append(str(path))
    return chosen


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))

