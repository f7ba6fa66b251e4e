"""What the three tools stand on: `errors` (the user's errors, told from bugs), `cli`
(one runner: exit statuses, Ctrl-C, TensorFlow's log lines), `storage` (local paths and
`tf.io.gfile` URLs), `files` (a file written whole or not at all), `progress` and
`words` (how the tools report).

It lives in the lowest of the three packages because the layout is three packages and
both others stand on this one; it imports nothing else of them, and `serving` imports
nothing else of `tfrecords_tools` (`tests/test_imports.py`).
"""
