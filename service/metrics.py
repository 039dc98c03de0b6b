"""Prometheus metrics the service exports at `/metrics` (names are part of the deployment contract:
`deploy/grafana` dashboards and alerting read them)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter(
    "anyface_http_requests_total", "HTTP requests by route template, method and status.", ["route", "method", "status"]
)
REQUEST_LATENCY = Histogram(
    "anyface_http_request_duration_seconds", "HTTP request latency.", ["route", "method"], buckets=LATENCY_BUCKETS
)
ERRORS = Counter("anyface_errors_total", "Error answers by machine-readable code.", ["code"])
STAGE_LATENCY = Histogram(
    "anyface_stage_duration_seconds",
    "Latency of each pipeline stage (decode, detect, align, embed, search).",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
STAGE_CPU = Counter(
    "anyface_stage_cpu_seconds",
    "CPU seconds of the thread that ran each pipeline stage; a model's inference counts in full when its session "
    "runs in that thread (one intra-op thread: `cpu_threads` 1, the default with as many workers as cores).",
    ["stage"],
)
FACES_PER_REQUEST = Histogram(
    "anyface_faces_per_request", "Faces detected per image.", ["route"], buckets=(0, 1, 2, 3, 5, 10, 20, 50, 100)
)
FACES_EMBEDDED = Counter("anyface_faces_embedded_total", "Faces embedded, by branch resolution.", ["branch"])
BATCH_SIZE = Histogram(
    "anyface_embed_batch_size", "Faces per embedding batch, by branch resolution.", ["branch"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
GALLERY_FACES = Gauge("anyface_gallery_faces", "Faces in the search index of each gallery.", ["gallery"])
GALLERY_SUBJECTS = Gauge("anyface_gallery_subjects", "Subjects in each gallery.", ["gallery"])
READY = Gauge("anyface_ready", "1 when models are loaded and the store is reachable and caught up.")


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time a pipeline stage into `anyface_stage_duration_seconds{stage=name}`, and its thread's CPU time into
    `anyface_stage_cpu_seconds_total{stage=name}`."""
    started, cpu = time.perf_counter(), time.thread_time()
    try:
        yield
    finally:
        STAGE_LATENCY.labels(name).observe(time.perf_counter() - started)
        STAGE_CPU.labels(name).inc(time.thread_time() - cpu)
