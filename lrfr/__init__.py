"""The ``lrfr`` command line: one entry point over training, evaluation and serving."""
