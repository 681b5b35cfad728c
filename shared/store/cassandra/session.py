"""The asyncio session on the Cassandra driver: :class:`CassandraSession` runs statements from asyncio on
``acsylla`` (the ``cassandra`` extra): the C++ driver's own I/O thread, results handed to the event loop,
no Python per protocol frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

from shared.store.cassandra.config import CassandraConfig, CassandraError, Consistency


class Prepared:
    """A statement prepared on the cluster by :meth:`CassandraSession.prepare`; reusable, shareable."""

    __slots__ = ("_driver", "cql")

    def __init__(self, cql: str, driver_statement: Any) -> None:
        self.cql = cql
        self._driver = driver_statement

    def __repr__(self) -> str:
        return f"Prepared({self.cql!r})"


Row = tuple[Any, ...]


class _ShardInfoNoise(logging.Filter):
    """Drops the C++ driver's ERROR line on every connection to Apache Cassandra, which has no shards
    ("Could not retrieve sharding info ... Continuing WITHOUT SHARD-AWARENESS"): expected, not an error.
    And its line per host when a session bound to a keyspace finds none: :meth:`CassandraSession.connect`
    then creates it, or raises an error naming it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "WITHOUT SHARD-AWARENESS" in message:
            return False
        return not ("Connection pool was unable to connect" in message and "' does not exist" in message)


_DRIVER_LOG = logging.getLogger("acsylla")  # the logger the driver's messages go to
if not any(isinstance(f, _ShardInfoNoise) for f in _DRIVER_LOG.filters):
    _DRIVER_LOG.addFilter(_ShardInfoNoise())


def _short(cql: str) -> str:
    flat = " ".join(cql.split())
    return flat if len(flat) <= 120 else flat[:117] + "..."


class CassandraSession:
    """One driver session for a process: connection pools to every node, prepared statements, from asyncio.

    Every method is a coroutine of the caller's event loop; the driver's I/O runs in its own thread. Rows
    come back as tuples in the statement's column order (text as ``str``, blob as ``bytes``, int and bigint
    as ``int``, a missing value as ``None``). Errors from the driver or the cluster are raised as
    :class:`CassandraError` naming the statement (never its bound values).
    """

    def __init__(self, config: CassandraConfig, cluster: Any, session: Any, hosts: _HostEvents | None = None) -> None:
        self.config = config
        self._cluster = cluster
        self._session = session
        self._hosts = hosts or _HostEvents()
        self._prepared: dict[str, Prepared] = {}
        self._closed = False

    @classmethod
    async def connect(cls, config: CassandraConfig, *, create_keyspace: bool = True) -> CassandraSession:
        """Connect to the cluster with a session bound to the keyspace; create the keyspace first when it is
        missing (``create_keyspace``, else :class:`CassandraError` naming it).

        Load balancing is token-aware (a statement goes to a replica of its partition) over DC-aware round
        robin (``local_dc``, or the datacenter of the first contact point). Raises :class:`CassandraError`
        when no host answers within ``connect_timeout_s``, or when the credentials or TLS are refused.
        """
        import acsylla

        hosts = _HostEvents()
        options: dict[str, Any] = {
            "port": config.port,
            "connect_timeout": config.connect_timeout_s,
            "request_timeout": config.request_timeout_s,
            "consistency": acsylla.Consistency[config.consistency],
            "token_aware_routing": True,
            "log_level": "error",
            "host_listener_callback": hosts.on_event,
        }
        if config.local_dc:
            options["load_balance_dc_aware"] = config.local_dc
        if config.username:
            options["username"] = config.username
            options["password"] = config.password
        if config.ssl:
            options["ssl_enabled"] = True
            options["ssl_verify_flags"] = {
                "none": acsylla.SSLVerifyFlags.NONE,
                "cert": acsylla.SSLVerifyFlags.PEER_CERT,
                "identity": acsylla.SSLVerifyFlags.PEER_IDENTITY,
            }[config.ssl_verify]
            for option, url_option, path in (
                ("ssl_trusted_cert", "ssl_ca", config.ssl_ca),
                ("ssl_cert", "ssl_cert", config.ssl_cert),
                ("ssl_private_key", "ssl_key", config.ssl_key),
            ):
                if path:
                    options[option] = await asyncio.to_thread(_read_pem, url_option, path)
        cluster = acsylla.create_cluster(list(config.hosts), **options)
        where = f"{','.join(config.hosts)}:{config.port}"
        try:
            try:
                # Bound to the keyspace when connecting: every connection, a reconnection too, opens with
                # its USE (a USE sent after connecting does not reach every connection).
                session = await cluster.create_session(keyspace=config.keyspace)
            except acsylla.errors.CassErrorLibUnableToSetKeyspace as exc:
                if not create_keyspace:
                    raise CassandraError(f"cannot use keyspace {config.keyspace!r} at {where}: {exc}") from exc
                await _create_keyspace(config, cluster, where)
                session = await _bound_session(config, cluster)
        except acsylla.errors.CassException as exc:
            cluster.destroy()  # else its I/O thread and wake-up sockets outlive it: fds leak per attempt
            raise CassandraError(f"cannot connect to Cassandra at {where}: {exc}") from exc
        except BaseException:
            cluster.destroy()
            raise
        return cls(config, cluster, session, hosts)

    async def prepare(self, cql: str) -> Prepared:
        """Prepare ``cql`` on the cluster once per session (cached by its text); ``?`` marks the values."""
        found = self._prepared.get(cql)
        if found is not None:
            return found
        import acsylla

        try:
            statement = await self._session.create_prepared(cql)
        except acsylla.errors.CassException as exc:
            raise CassandraError(f"cannot prepare {_short(cql)!r}: {exc}") from exc
        prepared = self._prepared[cql] = Prepared(cql, statement)
        self._hosts.prepared = True
        return prepared

    def _statement(self, statement: Prepared | str, values: Sequence[Any], consistency: Consistency | None) -> Any:
        import acsylla

        level = acsylla.Consistency[consistency] if consistency else None
        if isinstance(statement, Prepared):
            return statement._driver.bind(list(values) if values else None, consistency=level)
        return acsylla.create_statement(statement, len(values) or None, consistency=level)

    async def execute(
        self,
        statement: Prepared | str,
        values: Sequence[Any] = (),
        *,
        consistency: Consistency | None = None,
    ) -> list[Row]:
        """Run one statement (prepared, or CQL text for schema changes and one-offs) and return every row.

        ``consistency`` overrides the URL's level for this statement. Schema changes return once the nodes
        agree on the schema (or after the driver's 10 s wait). Results larger than one page are not paged:
        bound reads with ``LIMIT`` (a page holds 5,000 rows).
        """
        import acsylla

        driver_statement = self._statement(statement, values, consistency)
        if not isinstance(statement, Prepared) and values:
            driver_statement.bind_list(list(values))
        try:
            result = await self._session.execute(driver_statement)
        except acsylla.errors.CassException as exc:
            cql = statement.cql if isinstance(statement, Prepared) else statement
            raise CassandraError(f"{_short(cql)!r} failed: {exc}") from exc
        return [row.as_tuple() for row in result.all()]

    async def _page(
        self, statement: Prepared, values: Sequence[Any], page_size: int, state: bytes | None, level: Any
    ) -> tuple[list[Row], bytes | None]:
        """One page of ``statement`` and the state of the next (``None``: this was the last)."""
        import acsylla

        bound = statement._driver.bind(
            list(values) if values else None, page_size=page_size, page_state=state, consistency=level
        )
        try:
            result = await self._session.execute(bound)
        except acsylla.errors.CassException as exc:
            raise CassandraError(f"{_short(statement.cql)!r} failed: {exc}") from exc
        rows = [row.as_tuple() for row in result.all()]
        return rows, (result.page_state() if result.has_more_pages() else None)

    async def pages(
        self,
        statement: Prepared,
        values: Sequence[Any] = (),
        *,
        page_size: int = 1000,
        consistency: Consistency | None = None,
    ) -> AsyncIterator[list[Row]]:
        """The rows of ``statement``, one page (at most ``page_size`` rows) at a time, in the statement's
        order; each page is fetched when the caller asks for it, so a caller that stops early reads no
        further. Errors as :meth:`execute`."""
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        import acsylla

        level = acsylla.Consistency[consistency] if consistency else None
        state: bytes | None = None
        while True:
            rows, state = await self._page(statement, values, page_size, state, level)
            if rows or state is None:
                yield rows
            if state is None:
                return

    async def execute_all(
        self,
        statement: Prepared,
        values: Sequence[Any] = (),
        *,
        page_size: int = 5000,
        consistency: Consistency | None = None,
    ) -> list[Row]:
        """Every row of ``statement``, however many pages it takes (:meth:`execute` returns one page)."""
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        import acsylla

        level = acsylla.Consistency[consistency] if consistency else None
        rows, state = await self._page(statement, values, page_size, None, level)
        while state is not None:
            more, state = await self._page(statement, values, page_size, state, level)
            rows.extend(more)
        return rows

    async def execute_many(
        self,
        statement: Prepared,
        values: Iterable[Sequence[Any]],
        *,
        concurrency: int = 64,
        consistency: Consistency | None = None,
    ) -> list[list[Row]]:
        """Run ``statement`` once per item of ``values``, at most ``concurrency`` in flight; the rows of
        each run, in the order of ``values``. The first failure cancels the runs still in flight and is
        raised (runs already done stay done: make such statements idempotent)."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        items = list(values)
        results: list[list[Row]] = [[] for _ in items]
        cursor = iter(range(len(items)))

        async def lane() -> None:
            for index in cursor:  # the lanes share one cursor: each item runs once
                results[index] = await self.execute(statement, items[index], consistency=consistency)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(concurrency, len(items))):
                    group.create_task(lane())
        except BaseExceptionGroup as group_error:
            raise group_error.exceptions[0] from None
        return results

    async def execute_batch(
        self,
        statement: Prepared,
        values: Sequence[Sequence[Any]],
        *,
        consistency: Consistency | None = None,
    ) -> None:
        """Run ``statement`` for every item of ``values`` as one UNLOGGED batch.

        Meant for rows of one partition, which the node applies as a single mutation (atomic and isolated
        within that partition); across partitions an unlogged batch only adds coordinator work. Never a
        logged batch: no batch log on the hot path.
        """
        if not values:
            return
        import acsylla

        batch = acsylla.create_batch_unlogged()
        for item in values:
            batch.add_statement(statement._driver.bind(list(item)))
        batch.set_consistency(acsylla.Consistency[consistency or self.config.consistency])
        try:
            await self._session.execute_batch(batch)
        except acsylla.errors.CassException as exc:
            raise CassandraError(f"batch of {len(values)} x {_short(statement.cql)!r} failed: {exc}") from exc

    async def execute_statements(
        self,
        items: Sequence[tuple[Prepared, Sequence[Any]]],
        *,
        consistency: Consistency | None = None,
    ) -> None:
        """Run several prepared statements (e.g. inserts and deletes of one partition) as one UNLOGGED
        batch, as :meth:`execute_batch` does for one statement."""
        if not items:
            return
        import acsylla

        batch = acsylla.create_batch_unlogged()
        for statement, item in items:
            batch.add_statement(statement._driver.bind(list(item)))
        batch.set_consistency(acsylla.Consistency[consistency or self.config.consistency])
        try:
            await self._session.execute_batch(batch)
        except acsylla.errors.CassException as exc:
            names = sorted({_short(statement.cql) for statement, _ in items})
            raise CassandraError(
                f"batch of {len(items)} statements ({'; '.join(names)[:300]!r}) failed: {exc}"
            ) from exc

    async def close(self) -> None:
        """Let in-flight requests finish, then close every connection. Idempotent.

        When a host went down and has not come back, waits for it up to :data:`HOST_BACK_WAIT_S`, and
        closes at least :data:`HOST_UP_SETTLE_S` after the last host came back: a host that comes back gets
        every statement prepared again on a connection of its own before the driver reports it up, and a
        session torn down meanwhile aborts the process ("pure virtual method called": the C++ driver's
        CASSCPP-3)."""
        if self._closed:
            return
        self._closed = True
        if self._hosts.down:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hosts.all_up.wait(), HOST_BACK_WAIT_S)
        settle = self._hosts.last_up + HOST_UP_SETTLE_S - time.monotonic()
        if settle > 0:
            await asyncio.sleep(settle)
        try:
            await self._session.close()
        finally:
            self._cluster.destroy()


async def _bound_session(config: CassandraConfig, cluster: Any) -> Any:
    """A driver session bound to the keyspace just created, retried while the nodes do not all know it
    yet (for up to :data:`KEYSPACE_AGREEMENT_S`)."""
    import acsylla

    deadline = time.monotonic() + KEYSPACE_AGREEMENT_S
    while True:
        try:
            return await cluster.create_session(keyspace=config.keyspace)
        except acsylla.errors.CassErrorLibUnableToSetKeyspace:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _create_keyspace(config: CassandraConfig, cluster: Any, where: str) -> None:
    """``CREATE KEYSPACE`` from a driver session of no keyspace (it returns once the nodes agree on the
    schema, or after the driver's 10 s wait)."""
    import acsylla

    session = await cluster.create_session()
    try:
        await session.execute(acsylla.create_statement(config.create_keyspace_cql()))
    except acsylla.errors.CassException as exc:
        raise CassandraError(f"cannot create keyspace {config.keyspace!r} at {where}: {exc}") from exc
    finally:
        await session.close()


KEYSPACE_AGREEMENT_S = 30.0
HOST_UP_SETTLE_S = 1.0
HOST_BACK_WAIT_S = 10.0


class _HostEvents:
    """The hosts the driver saw go down and not come back yet, and when one last came back up or joined
    once statements were prepared (monotonic seconds; -inf: never). The hosts found when connecting do not
    count: there is nothing to prepare on them again."""

    def __init__(self) -> None:
        self.last_up = float("-inf")
        self.prepared = False
        self.down: set[str] = set()
        self.all_up = asyncio.Event()
        """Set while :attr:`down` is empty."""
        self.all_up.set()

    def on_event(self, event: Any, address: str) -> None:
        name = getattr(event, "name", "")
        if name == "DOWN":
            self.down.add(address)
        elif name == "REMOVE":
            self.down.discard(address)  # gone for good: nothing will be prepared on it
        elif (name == "UP" and address in self.down) or (name == "ADD" and self.prepared):
            self.down.discard(address)
            self.last_up = time.monotonic()
        if self.down:
            self.all_up.clear()
        else:
            self.all_up.set()


def _read_pem(option: str, path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise CassandraError(f"{option}: cannot read {path!r}: {exc.strerror}") from exc
