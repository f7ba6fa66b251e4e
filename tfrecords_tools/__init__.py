"""Image archives and folders (ILSVRC's, ImageNet's full releases, your own) to sharded
TFRecords.

`python -m tfrecords_tools convert | merge | verify | stats`; the library functions are
`tfrecords_tools.convert.convert`, `.manifest.merge`, `.verify.verify` and
`.stats.compute_stats`; `tfrecords_tools.base` is what the three tools share.
"""

__version__ = "0.1.0"
