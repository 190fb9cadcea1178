"""Sub-commands of ``lrfr``; each module exposes ``register(app)``."""
