"""Evaluation: protocols, metrics, loaders, runner and reports (docs/evaluation.md).

numpy-only at import: :mod:`.metrics` and :mod:`.protocols` score embeddings (shared by
the training loop's validation and ``lrfr eval``); :mod:`.datasets` reads the official
layouts; :mod:`.embedding` wraps ONNX artifacts and (lazily, torch) checkpoints;
:mod:`.runner` degrades, embeds and scores; :mod:`.report` writes the result files.
"""
