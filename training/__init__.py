"""Offline half: datasets, cross-resolution training, fine-tuning, evaluation, export.

``training.eval`` and ``training.degrade`` are numpy-only; everything else needs torch.
"""
