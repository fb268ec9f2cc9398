"""d2geo's performance benchmarks (``python benchmarks/run.py``), one module per section, and
the loader of the pinned upstream reference modules that the test suite uses too."""
