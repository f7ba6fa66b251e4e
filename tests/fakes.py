"""Stand-ins the tests of several packages share."""

from __future__ import annotations

import json
from pathlib import Path

#: A stats.json (`tfrecords_tools.stats`) whose mean differs from ImageNet's, so that a
#: test sees whether it was used; the eigenvectors are orthonormal.
FAKE_STATS = {
    "pixel_scale": 1.0, "mean_rgb": [0.3, 0.5, 0.7], "eigval": [0.2, 0.02, 0.005],
    "eigvec": [[-0.5774, 0.7071, 0.4082], [-0.5774, 0.0, -0.8165],
               [-0.5774, -0.7071, 0.4082]]}


def write_fake_stats(directory: Path) -> Path:
    path = directory / "stats.json"
    path.write_text(json.dumps(FAKE_STATS))
    return path


#: The head of a real /proc/cpuinfo (one processor of two), its flags cut to the point.
CPUINFO = """processor\t: {n}
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse sse2 avx avx2 fma {extra}
bogomips\t: 4000.00

"""


def write_cpuinfo(directory: Path, extra: str) -> Path:
    """A two-processor /proc/cpuinfo with AVX2 and FMA and the `extra` flags."""
    path = directory / "cpuinfo"
    path.write_text(CPUINFO.format(n=0, extra=extra) + CPUINFO.format(n=1, extra=extra))
    return path
