"""Prometheus metrics of one app instance (its own registry: no global state)."""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_SEARCH_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
_BODY_BUCKETS = (0, 1024, 16384, 262144, 1048576, 4194304, 16777216, 67108864)
#: Methods counted under their own name; any other is counted as "other", so a client
#: cannot grow the label set.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _GallerySize:
    def __init__(self, gauge: _GalleryGauge, gallery: str) -> None:
        self._gauge = gauge
        self._gallery = gallery

    def set(self, value: float) -> None:
        self._gauge.set_size(self._gallery, value)


class _GalleryGauge:
    """Sizes of the gallery indexes.

    Always published as totals (``lrfr_galleries``, ``lrfr_index_faces``); per gallery
    (``lrfr_gallery_faces{gallery}``) only when asked, since gallery names can be
    sensitive (a watch list's name says what it is for).
    """

    def __init__(self, registry: CollectorRegistry, *, per_gallery: bool) -> None:
        self._sizes: dict[str, float] = {}
        self._lock = threading.Lock()
        Gauge("lrfr_galleries", "Galleries with a loaded index.", registry=registry).set_function(
            lambda: float(len(self._sizes))
        )
        Gauge(
            "lrfr_index_faces", "Vectors in all gallery indexes.", registry=registry
        ).set_function(self._total)
        self._per_gallery = (
            Gauge(
                "lrfr_gallery_faces",
                "Vectors in each gallery's index (LRFR_METRICS_GALLERY_LABELS).",
                ["gallery"],
                registry=registry,
            )
            if per_gallery
            else None
        )

    def _total(self) -> float:
        with self._lock:
            return float(sum(self._sizes.values()))

    def labels(self, *, gallery: str) -> _GallerySize:
        return _GallerySize(self, gallery)

    def set_size(self, gallery: str, value: float) -> None:
        with self._lock:
            self._sizes[gallery] = value
        if self._per_gallery is not None:
            self._per_gallery.labels(gallery=gallery).set(value)

    def remove_label(self, gallery: str) -> None:
        """Forgets a gallery (unknown names are ignored)."""
        with self._lock:
            known = self._sizes.pop(gallery, None) is not None
        if known and self._per_gallery is not None:
            self._per_gallery.remove(gallery)


class ServiceMetrics:
    """Request counts, latencies and body sizes per endpoint, embedding batch sizes,
    gallery sizes.

    Args:
        gallery_labels: publish each gallery's size under its name.
    """

    def __init__(self, *, gallery_labels: bool = False) -> None:
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
        self.body_bytes = Histogram(
            "lrfr_request_body_bytes",
            "Request body bytes the service read, by endpoint (refused bodies stop early).",
            ["endpoint"],
            buckets=_BODY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "lrfr_embedding_batch_size",
            "Images per ONNX Runtime call.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.gallery_faces = _GalleryGauge(self.registry, per_gallery=gallery_labels)
        self.index_rebuilds = Counter(
            "lrfr_index_rebuilds",
            "Gallery indexes rebuilt from the database.",
            registry=self.registry,
        )
        self.search_seconds = Histogram(
            "lrfr_vector_search_seconds",
            "One search of a gallery's vectors (FAISS index or Milvus), by backend and kind "
            "(exact or approximate); a request may search more than once for enough subjects.",
            ["backend", "kind"],
            buckets=_SEARCH_BUCKETS,
            registry=self.registry,
        )

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)


class RequestMetricsMiddleware:
    """Counts each HTTP request by route template, method and status, and observes its
    latency and the body bytes read (pure ASGI: the body streams through untouched)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        received = 0
        status = 500  # unless a response starts: the server answers an exception with 500

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def status_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, counting_receive, status_send)
        finally:
            # the router leaves the matched route in the scope; its template is the label
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.requests.labels(endpoint, method, str(status)).inc()
            self.metrics.latency.labels(endpoint, method).observe(time.perf_counter() - started)
            self.metrics.body_bytes.labels(endpoint).observe(received)
