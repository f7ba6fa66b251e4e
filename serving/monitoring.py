"""Prometheus metrics with TF Serving's names (servables/tensorflow/util.cc), served on the
REST port when `--monitoring_config_file` enables them (util/prometheus_exporter.cc).

    :tensorflow:serving:request_count{model_name, status}        requests by outcome
    :tensorflow:serving:request_latency{model_name, API, entrypoint}   microseconds

Built on prometheus_client: its counters would add `_total` to the sample name, so the
count is exposed as an untyped family under TF Serving's exact name; the latency is a
histogram with TF Serving's buckets (10 us x 1.8^i, 33 of them).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import HistogramMetricFamily, UntypedMetricFamily

from serving.errors import ServingError

DEFAULT_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath
BUCKETS = tuple(10 * 1.8**i for i in range(33))  # monitoring::Buckets::Exponential(10, 1.8, 33)
COUNT = ":tensorflow:serving:request_count"
LATENCY = ":tensorflow:serving:request_latency"


class Metrics:
    """Request counts and latencies, recorded by the gRPC and REST entry points."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = defaultdict(int)
        self._latency: dict[tuple[str, str, str], list] = {}
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def record(self, model_name: str, api: str, entrypoint: str, status: str,
               seconds: float) -> None:
        micros = seconds * 1e6
        with self._lock:
            self._counts[model_name, status] += 1
            cell = self._latency.setdefault((model_name, api, entrypoint),
                                            [[0] * (len(BUCKETS) + 1), 0.0])
            index = next((i for i, bound in enumerate(BUCKETS) if micros <= bound),
                         len(BUCKETS))
            cell[0][index] += 1
            cell[1] += micros

    def timed(self, model_name: str, api: str, entrypoint: str, call):
        """Runs `call()`, recording its outcome (the ServingError's code) and time."""
        start, status = time.perf_counter(), "OK"
        try:
            return call()
        except ServingError as error:
            status = error.code.name
            raise
        finally:
            self.record(model_name, api, entrypoint, status, time.perf_counter() - start)

    def collect(self):
        with self._lock:
            counts = dict(self._counts)
            latency = {key: ([*cell[0]], cell[1]) for key, cell in self._latency.items()}
        family = UntypedMetricFamily(COUNT, "The total number of requests.",
                                     labels=["model_name", "status"])
        for (model, status), value in sorted(counts.items()):
            family.add_metric([model, status], value)
        yield family
        histogram = HistogramMetricFamily(
            LATENCY, "Distribution of wall time (in microseconds) for Tensorflow Serving "
            "request.", labels=["model_name", "API", "entrypoint"])
        for labels, (buckets, total) in sorted(latency.items()):
            cumulative, rows = 0, []
            for bound, count in zip([*BUCKETS, float("inf")], buckets, strict=True):
                cumulative += count
                rows.append((f"{bound:g}" if bound != float("inf") else "+Inf", cumulative))
            histogram.add_metric(list(labels), rows, total)
        yield histogram

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
