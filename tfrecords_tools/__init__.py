"""ILSVRC archives to sharded TFRecords (DESIGN.md §2)."""
