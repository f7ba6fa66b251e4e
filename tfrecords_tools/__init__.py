"""ILSVRC archives to sharded TFRecords.

`python -m tfrecords_tools convert | merge | verify | stats`; the library functions are
`tfrecords_tools.convert.convert`, `.convert.merge`, `.verify.verify` and
`.stats.compute_stats`.
"""

__version__ = "0.1.0"
