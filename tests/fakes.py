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
