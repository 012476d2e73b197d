"""Prometheus metrics, on a registry owned by one app (no module globals, so tests can build many)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.repositories.alerts import AlertRepository
from appliance.repositories.tasks import TaskRepository

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StateCollector(Collector):
    """Task and alert counts read from the database at scrape time (so every node reports the
    same truth, whichever one Prometheus asks)."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily("ingot_tasks", "Tasks by taskState", labels=["state"])
        alerts = GaugeMetricFamily("ingot_alerts_active", "Uncleared alerts by severity", labels=["severity"])
        try:
            with unit_of_work(self.ctx.session_factory) as db:
                for state, n in TaskRepository(db).count_by_state().items():
                    tasks.add_metric([state], n)
                for severity, n in AlertRepository(db).count_active_by_severity().items():
                    alerts.add_metric([severity], n)
        except Exception:
            log.exception("metrics: cannot read task and alert counts")
        yield tasks
        yield alerts


class Metrics:
    def __init__(self, ctx: AppContext) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("ingot_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("ingot_http_request_seconds", "HTTP request latency", ["method", "route"],
                                 registry=self.registry)
        self.registry.register(_StateCollector(ctx))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
