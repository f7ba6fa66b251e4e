"""What a conversion did, per split, and where it went: the converter's closing table."""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

from tfrecords_tools.base import words


@dataclasses.dataclass
class Summary:
    """What a run did, per split, and where it went."""

    output: Path | None = None
    images: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    repaired: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    replaced: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    shards_written: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    shards_kept: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    incomplete: list[str] = dataclasses.field(default_factory=list)
    splits: list[str] = dataclasses.field(default_factory=list)
    merged: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        lines = [f"{'split':<12}{'images':>10}{'skipped':>9}{'repaired':>10}"
                 f"{'shards written':>16}{'shards kept':>13}"]
        for split in self.splits:
            lines.append(f"{split:<12}{self.images[split]:>10}{self.skipped[split]:>9}"
                         f"{self.repaired[split]:>10}{self.shards_written[split]:>16}"
                         f"{self.shards_kept[split]:>13}")
        total = sum(self.images.values())
        rate = total / self.seconds if self.seconds else 0.0
        lines.append(f"{words.count(total, 'image')} in {self.seconds:.1f} s ({rate:.0f} "
                     f"images/s) into {self.output}; manifest written for: "
                     f"{', '.join(self.merged) or 'none yet'}")
        if self.replaced:
            lines.append("images replaced from the patch tar: " + ", ".join(
                f"{split} {self.replaced[split]}" for split in self.splits
                if self.replaced[split]))
        lines += [f"INCOMPLETE (--allow-incomplete): {note}" for note in self.incomplete]
        return "\n".join(lines)
