"""Prometheus metrics of one app instance (its own registry: no global state)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _GalleryGauge:
    """``lrfr_gallery_faces{gallery}`` with label removal that ignores unknown labels."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._gauge = Gauge(
            "lrfr_gallery_faces",
            "Vectors in each gallery's index.",
            ["gallery"],
            registry=registry,
        )

    def labels(self, *, gallery: str) -> Gauge:
        return self._gauge.labels(gallery=gallery)

    def remove_label(self, gallery: str) -> None:
        with contextlib.suppress(KeyError):
            self._gauge.remove(gallery)


class ServiceMetrics:
    """Request counts and latencies per endpoint, embedding batch sizes, gallery sizes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "lrfr_requests",
            "HTTP requests by endpoint (route template), method and status.",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lrfr_request_duration_seconds",
            "HTTP request latency by endpoint and method.",
            ["endpoint", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "lrfr_embedding_batch_size",
            "Images per ONNX Runtime call.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.gallery_faces = _GalleryGauge(self.registry)
        self.index_rebuilds = Counter(
            "lrfr_index_rebuilds",
            "Gallery indexes rebuilt from the database.",
            registry=self.registry,
        )

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)
