"""Network definitions, margin heads, the Laplacian quality score and the model artifact.

The parts the service needs (``models.quality``, ``models.artifact``, ``models.embedder``)
import without torch; the backbones, heads and the exporter need the ``train`` extra.
"""
