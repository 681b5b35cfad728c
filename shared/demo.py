"""Realistic synthetic traces: the demo traffic of ``make run``, the load generator and the tests.

Shaped like what OpenTelemetry-instrumented services send. A gateway's server span is the root; every RPC
is a client span in the caller and a server span, its child, in the callee (both named after the called
operation, with ``rpc.*`` or ``http.*`` attributes); a call to the database or the cache carries the
client's ``db.*`` attributes (``db.system``, ``db.namespace``, ``db.operation.name``, ``db.query.text``);
the gateway sometimes publishes to the ``notifications`` queue (a producer span), which the notification
worker consumes (a consumer span, its child, starting after it and free to outlast the root). The database
and the cache are traced services of their own (a traced database proxy and cache service), so the
dependency graph shows them; the external API is a third party, seen only in its callers' client spans
(``peer.service`` ``external-api``). Every service that writes spans serves RPCs, so each has server spans.

Each span has the resource of the service instance that wrote it (``host.name``, ``service.version``,
``service.instance.id``, ``deployment.environment.name``); a service runs two or three instances. Some
calls fail (the server span and its client's), with an ``exception`` event; a few spans log a ``retry``.
Deterministic for a given ``random.Random``.
"""

from __future__ import annotations

import random
import uuid
from typing import Final

from shared.models import Kind, Log, Span, Status, Tags

SERVICES: Final = {
    "api-gateway": ["handleUserRequest", "processOrder", "getCatalog"],
    "user-service": ["getUserById", "validateUser", "updateProfile"],
    "order-service": ["createOrder", "listOrders"],
    "inventory-service": ["reserveItems", "checkStock"],
    "payment-service": ["charge", "refund"],
    "database": ["query", "insertOrder", "complexQuery"],
    "cache": ["get", "set"],
    "notification-worker": ["sendEmail", "notifications process"],
}
"""Services that write spans, and the operations their server (or consumer) spans are named after."""
CALLS: Final = {
    "api-gateway": ["user-service", "order-service", "inventory-service", "cache"],
    "user-service": ["database", "cache", "notification-worker"],
    "order-service": ["database", "payment-service", "inventory-service"],
    "inventory-service": ["database", "external-api"],
    "payment-service": ["external-api", "database"],
    "notification-worker": ["external-api"],  # the e-mail provider
}
EXTERNAL: Final = "external-api"
QUEUE: Final = "notifications"
VERSIONS: Final = {
    "api-gateway": "2.14.1", "user-service": "1.8.0", "order-service": "3.2.5", "inventory-service": "1.4.2",
    "payment-service": "5.0.3", "database": "16.4", "cache": "7.2.5", "notification-worker": "0.9.12",
}  # fmt: skip
QUERIES: Final = {
    "query": ("postgresql", "SELECT", "SELECT id, name, email FROM users WHERE id = $1"),
    "insertOrder": ("postgresql", "INSERT", "INSERT INTO orders (user_id, total) VALUES ($1, $2)"),
    "complexQuery": ("postgresql", "SELECT",
                     "SELECT o.id, sum(i.price) FROM orders o JOIN items i ON i.order_id = o.id GROUP BY o.id"),
    "get": ("redis", "GET", "GET user:?"),
    "set": ("redis", "SET", "SET user:? ?"),
}  # fmt: skip
"""Database and cache operation -> (db.system, db.operation.name, db.query.text: parameters left out, as
OpenTelemetry's instrumentations sanitize them)."""
CLIENT_NAMES: Final = {"query": "SELECT users", "insertOrder": "INSERT orders", "complexQuery": "SELECT orders",
                       "get": "GET", "set": "SET"}  # fmt: skip
"""The client span's name of a database or cache call (OpenTelemetry's ``{operation} {table}``); an RPC's
client span is named after the called operation, as its server span is."""


def _instances(service: str) -> list[Tags]:
    """The resources of a service's instances (fixed: the same for every trace and every run)."""
    resources: list[Tags] = []
    for i in range(2 + len(service) % 2):
        instance = uuid.uuid5(uuid.NAMESPACE_DNS, f"{service}-{i}.demo")
        resources.append({
            "host.name": f"{service}-{instance.hex[:6]}-{instance.hex[6:11]}",
            "service.version": VERSIONS[service],
            "service.instance.id": str(instance),
            "deployment.environment.name": "demo",
        })  # fmt: skip
    return resources


INSTANCES: Final = {service: _instances(service) for service in SERVICES}


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(n * 4):0{n}x}"


class _Trace:
    """One trace being made: a span's slot is reserved when it starts (so the root comes first) and filled
    when it ends."""

    def __init__(self, rng: random.Random, error_rate: float, max_depth: int, max_spans: int, fan_out: int) -> None:
        self.rng = rng
        self.error_rate = error_rate
        self.max_depth = max_depth
        self.max_spans = max_spans
        self.fan_out = fan_out
        self.trace_id = _hex(rng, 32)
        self.spans: list[Span] = []
        self.resources = {service: rng.choice(instances) for service, instances in INSTANCES.items()}

    def room(self, spans: int) -> bool:
        return len(self.spans) + spans <= self.max_spans

    def reserve(self) -> tuple[int, str]:
        """A new span's slot and id."""
        span_id = _hex(self.rng, 16)
        self.spans.append(Span(trace_id=self.trace_id, span_id=span_id, service_name="-", operation_name="-",
                               start_time_us=0))  # fmt: skip
        return len(self.spans) - 1, span_id

    def put(self, slot: int, service: str, operation: str, parent: str | None, start: int, end: int, *,
            kind: Kind, status: Status = "success", tags: Tags) -> None:  # fmt: skip
        """Fill a reserved slot: the span, with an ``exception`` event when it failed and now and then a
        ``retry`` event."""
        logs: tuple[Log, ...] = ()
        if status == "error":
            error = self.rng.choice(["TimeoutError", "ConnectionResetError", "ValueError"])
            fields: Tags = {
                "event": "exception",
                "exception.type": error,
                "exception.message": f"{error} in {operation}",
            }
            logs = (Log(timestamp_us=max(start, end - 1), fields=fields),)
        elif self.rng.random() < 0.03:
            logs = (Log(timestamp_us=start + (end - start) // 3, fields={"event": "retry", "attempt": 2}),)
        self.spans[slot] = Span(
            trace_id=self.trace_id, span_id=self.spans[slot].span_id, parent_span_id=parent, service_name=service,
            operation_name=operation, start_time_us=start, duration_us=end - start, status=status, kind=kind,
            tags=tags, logs=logs, resource=self.resources[service],
        )  # fmt: skip

    def serve(self, service: str, operation: str, parent: str | None, start: int, budget: int, depth: int,
              kind: Kind = "server") -> tuple[int, Status]:  # fmt: skip
        """The server (or consumer) span of ``service`` and all it calls: its (end, status)."""
        slot, span_id = self.reserve()
        cursor = end = start + self.rng.randint(100, 2_000)
        callees = CALLS.get(service, [])
        if depth < self.max_depth and callees:
            for _ in range(self.rng.randint(2, self.fan_out) if depth < 2 else self.rng.randint(0, self.fan_out - 1)):
                parallel = self.rng.random() < 0.3
                at = start + self.rng.randint(50, 500) if parallel else cursor
                done = self.call(service, self.rng.choice(callees), span_id, at, budget // 2, depth + 1)
                if done is None:
                    break
                end = max(end, done)
                if not parallel:
                    cursor = done + self.rng.randint(10, 300)
        if service == "api-gateway" and self.rng.random() < 0.2 and self.room(2):
            cursor = self.publish(service, span_id, cursor, budget // 4)
        own = int(self.rng.expovariate(1 / max(1, budget // 10)))
        if service == "database" and self.rng.random() < 0.1:
            own += self.rng.randint(100_000, 400_000)  # the occasional slow query
        end = max(end, cursor) + own
        status: Status = "error" if self.rng.random() < self.error_rate else "success"
        self.put(slot, service, operation, parent, start, end, kind=kind, status=status,
                 tags=self.server_tags(service, operation, status))  # fmt: skip
        return end, status

    def call(self, caller: str, callee: str, parent: str, start: int, budget: int, depth: int) -> int | None:
        """A client span of ``caller`` and, unless the callee is the external API, the callee's server span
        (its child); returns where the client span ends, ``None`` when the trace has no room for them."""
        if not self.room(1 if callee == EXTERNAL else 2):
            return None
        slot, client_id = self.reserve()
        served = start + self.rng.randint(50, 400)  # the request on its way
        if callee == EXTERNAL:
            status: Status = "error" if self.rng.random() < self.error_rate else "success"
            end = served + int(self.rng.expovariate(1 / max(1, budget // 6)))
            name, tags = "GET", self.external_tags(status)
        else:
            operation = self.rng.choice([op for op in SERVICES[callee] if not op.startswith(QUEUE)])
            end, status = self.serve(callee, operation, client_id, served, budget, depth)
            name, tags = CLIENT_NAMES.get(operation, operation), self.client_tags(callee, operation, status)
        end += self.rng.randint(50, 400)  # the response on its way
        self.put(slot, caller, name, parent, start, end, kind="client", status=status, tags=tags)
        return end

    def publish(self, service: str, parent: str, start: int, budget: int) -> int:
        """A producer span of ``service`` on the notifications queue and the worker's consumer span (its
        child, on its own time); returns where the producer span ends."""
        slot, producer = self.reserve()
        end = start + self.rng.randint(200, 3_000)
        self.serve("notification-worker", f"{QUEUE} process", producer, end + self.rng.randint(1_000, 50_000),
                   budget, 2, kind="consumer")  # fmt: skip
        tags: Tags = {"messaging.system": "kafka", "messaging.destination.name": QUEUE,
                      "messaging.operation.type": "send"}  # fmt: skip
        self.put(slot, service, f"{QUEUE} publish", parent, start, end, kind="producer", tags=tags)
        return end

    def server_tags(self, service: str, operation: str, status: Status) -> Tags:
        if service == "api-gateway":
            route = f"/api/{operation}"
            return {"http.request.method": "POST" if operation == "processOrder" else "GET", "http.route": route,
                    "url.path": route, "url.scheme": "https",
                    "http.response.status_code": 500 if status == "error" else 200}  # fmt: skip
        if operation.startswith(QUEUE):
            return {"messaging.system": "kafka", "messaging.destination.name": QUEUE,
                    "messaging.operation.type": "process", "messaging.consumer.group.name": service}  # fmt: skip
        if operation in QUERIES:
            system, _, text = QUERIES[operation]
            tags: Tags = {"db.system": system, "db.query.text": text}
            if service == "cache":
                tags["cache.hit"] = self.rng.random() < 0.7
            return tags
        return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": operation,
                "rpc.grpc.status_code": 13 if status == "error" else 0}  # fmt: skip

    @staticmethod
    def client_tags(callee: str, operation: str, status: Status) -> Tags:
        tags: Tags = {"peer.service": callee, "server.address": callee}
        if operation in QUERIES:
            system, name, text = QUERIES[operation]
            return tags | {"db.system": system, "db.namespace": "shop" if system == "postgresql" else "0",
                           "db.operation.name": name, "db.query.text": text,
                           "server.port": 5432 if system == "postgresql" else 6379}  # fmt: skip
        return tags | {"rpc.system": "grpc", "rpc.service": callee, "rpc.method": operation, "server.port": 50051,
                       "rpc.grpc.status_code": 13 if status == "error" else 0}  # fmt: skip

    @staticmethod
    def external_tags(status: Status) -> Tags:
        return {"peer.service": EXTERNAL, "server.address": "api.partner.example", "server.port": 443,
                "http.request.method": "GET", "url.full": "https://api.partner.example/v1/data",
                "http.response.status_code": 503 if status == "error" else 200}  # fmt: skip


def make_trace(
    rng: random.Random,
    start_us: int,
    *,
    error_rate: float = 0.01,
    max_depth: int = 4,
    max_spans: int = 60,
    fan_out: int = 4,
) -> list[Span]:
    """One trace as complete spans (root first). A server span's children lie inside its window; a
    consumer span starts after its producer span ends and may outlast the root.

    With the defaults a trace has about 25 spans on average (5 to 60), across 2 to 8 services (5.6 on average).
    """
    trace = _Trace(rng, error_rate, max_depth, max(1, max_spans), fan_out)
    operation = rng.choice(SERVICES["api-gateway"])
    trace.serve("api-gateway", operation, None, start_us, rng.randint(20_000, 300_000), 0)
    return trace.spans
