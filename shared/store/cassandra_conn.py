"""Cassandra connection: the store URL, parsed and validated, and an asyncio session on the driver.

``TRACING_STORE_URL=cassandra://host1,host2:9042/keyspace?option=value&...`` (ScyllaDB speaks the same
protocol and takes the same URL). Hosts are contact points: the driver discovers the rest of the cluster
from them. The port applies to every host (``host1:9042,host2:9042`` is accepted when the ports agree);
IPv6 addresses go in brackets. The keyspace (default ``tracing``) is 1..48 lower-case letters, digits and
``_``, starting with a letter. ``user:password@`` before the hosts is the same as the ``username`` and
``password`` options. Options (each at most once; an unknown one is an error naming it):

=====================  =========================================================================
``replication_factor`` replicas per datacenter when the keyspace is created (default: the number of
                       hosts, at most 3). Never changes an existing keyspace.
``replication``        ``dc1:3,dc2:2``: NetworkTopologyStrategy with these datacenters (instead of
                       ``replication_factor``, which then is the local, or else the first, one's)
``local_dc``           the datacenter to send requests to (DC-aware, token-aware routing); with it
                       the keyspace is created with NetworkTopologyStrategy ``{local_dc: N}``, without
                       it with SimpleStrategy N
``consistency``        the default consistency level: ``QUORUM`` (``LOCAL_QUORUM`` with local_dc),
                       or ONE, TWO, THREE, ALL, LOCAL_ONE, LOCAL_QUORUM, EACH_QUORUM
``username``           plain-text authentication (``password`` needs ``username``)
``ssl``                ``true`` for TLS; then ``ssl_ca`` (PEM file of the CAs to trust), ``ssl_cert``
                       and ``ssl_key`` (PEM files: a client certificate), ``ssl_verify``
                       (``cert``: the chain, the default; ``identity``: also the host's IP address in
                       the certificate; ``none``)
``connect_timeout_s``  per connection attempt, seconds (default 5)
``request_timeout_s``  per request, seconds (default 12)
``namespace``          1..64 letters, digits, ``_`` or ``-``: the store keeps its rows apart from
                       those of other namespaces in the same keyspace and tables (default: none).
                       Isolates tests (one namespace per test, one keyspace per run) without schema
                       changes; in production leave it out.
=====================  =========================================================================

Values are percent-decoded (write ``+`` in a password as ``%2B``). Empty values are the same as absent.
A bad URL raises :class:`CassandraUrlError` with a one-line message naming the option; the password never
appears in a message or a ``repr``.

:class:`CassandraSession` runs statements from asyncio on ``acsylla`` (the ``cassandra`` extra), chosen by
measurement (bench/cassandra_drivers.py, bench/README.md): the C++ driver's own I/O thread, results
handed to the event loop, no Python per protocol frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import msgspec

SCHEME = "cassandra"
DEFAULT_PORT = 9042
DEFAULT_KEYSPACE = "tracing"
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_REQUEST_TIMEOUT_S = 12.0

Consistency = Literal["ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_ONE", "LOCAL_QUORUM", "EACH_QUORUM"]
SslVerify = Literal["none", "cert", "identity"]

_NAME = re.compile(r"[a-z][a-z0-9_]{0,47}")
_DC = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_NAMESPACE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_OPTIONS = (
    "replication_factor",
    "replication",
    "local_dc",
    "consistency",
    "username",
    "password",
    "ssl",
    "ssl_ca",
    "ssl_cert",
    "ssl_key",
    "ssl_verify",
    "connect_timeout_s",
    "request_timeout_s",
    "namespace",
)


class CassandraUrlError(ValueError):
    """The store URL is not a valid ``cassandra://`` URL; the one-line message names the bad part."""


class CassandraError(RuntimeError):
    """A statement or the connection failed (unavailable replicas, timeout, bad CQL...); names the statement."""


class CassandraConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Where and how to connect, from :meth:`from_url`. Every field is already validated."""

    hosts: tuple[str, ...]
    port: int = DEFAULT_PORT
    keyspace: str = DEFAULT_KEYSPACE
    replication_factor: int = 1  # replicas in the local datacenter
    datacenters: tuple[tuple[str, int], ...] = ()  # explicit NetworkTopologyStrategy replicas per DC
    local_dc: str = ""
    consistency: Consistency = "QUORUM"
    username: str = ""
    password: str = ""
    ssl: bool = False
    ssl_ca: str = ""
    ssl_cert: str = ""
    ssl_key: str = ""
    ssl_verify: SslVerify = "cert"
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    namespace: str = ""  # '' = none (production)

    def __repr__(self) -> str:
        fields = {f: getattr(self, f) for f in self.__struct_fields__}
        if fields["password"]:
            fields["password"] = "***"  # noqa: S105 (the mask, not a password)
        return "CassandraConfig(" + ", ".join(f"{k}={v!r}" for k, v in fields.items()) + ")"

    @classmethod
    def from_url(cls, url: str) -> CassandraConfig:
        """Parse and validate ``cassandra://...`` (see the module docstring); raises :class:`CassandraUrlError`."""
        try:
            parts = urlsplit(url)
        except ValueError as exc:  # urlsplit checks [bracketed] hosts itself
            raise CassandraUrlError(f"hosts: {exc}") from None
        if parts.scheme != SCHEME:
            raise CassandraUrlError(f"expected a {SCHEME}://host[,host]:port/keyspace URL, got scheme {parts.scheme!r}")
        if parts.fragment:
            raise CassandraUrlError("a cassandra URL has no #fragment")
        userinfo, _, hostlist = parts.netloc.rpartition("@")
        hosts, port = _parse_hosts(hostlist)
        keyspace = unquote(parts.path.lstrip("/")) or DEFAULT_KEYSPACE
        if not _NAME.fullmatch(keyspace):
            raise CassandraUrlError(
                f"keyspace: expected 1..48 lower-case letters, digits or _ starting with a letter, got {keyspace!r}"
            )
        options = _parse_query(parts.query)
        if userinfo:
            user, has_password, password = userinfo.partition(":")
            for name, value in (("username", unquote(user)), ("password", unquote(password) if has_password else "")):
                if value and options.get(name, value) != value:
                    raise CassandraUrlError(f"{name}: given both before the host and as an option")
                if value:
                    options[name] = value

        config: dict[str, Any] = {"hosts": hosts, "port": port, "keyspace": keyspace}
        if "replication" in options and "replication_factor" in options:
            raise CassandraUrlError("replication_factor: give either replication_factor or replication, not both")
        local_dc = options.pop("local_dc", "")
        if local_dc and not _DC.fullmatch(local_dc):
            raise CassandraUrlError(f"local_dc: not a datacenter name: {local_dc!r}")
        config["local_dc"] = local_dc
        if "replication" in options:
            datacenters = config["datacenters"] = _parse_datacenters(options.pop("replication"))
            replicas = dict(datacenters)
            if local_dc and local_dc not in replicas:
                raise CassandraUrlError(f"local_dc: {local_dc!r} is not one of the replication datacenters")
            config["replication_factor"] = replicas[local_dc] if local_dc else datacenters[0][1]
        else:
            config["replication_factor"] = _int_option(options, "replication_factor", min(len(hosts), 3), 1, 100)
        consistency = options.pop("consistency", "LOCAL_QUORUM" if local_dc else "QUORUM").upper()
        if consistency not in get_args(Consistency):
            raise CassandraUrlError(
                f"consistency: expected one of {', '.join(get_args(Consistency))}, got {consistency!r}"
            )
        config["consistency"] = consistency
        config["username"] = options.pop("username", "")
        config["password"] = options.pop("password", "")
        if config["password"] and not config["username"]:
            raise CassandraUrlError("password: given without a username")
        config["ssl"] = _bool_option(options, "ssl")
        for name in ("ssl_ca", "ssl_cert", "ssl_key", "ssl_verify"):
            if name in options and not config["ssl"]:
                raise CassandraUrlError(f"{name}: needs ssl=true")
        for name in ("ssl_ca", "ssl_cert", "ssl_key"):
            config[name] = options.pop(name, "")
        if bool(config["ssl_cert"]) != bool(config["ssl_key"]):
            raise CassandraUrlError("ssl_cert: a client certificate needs both ssl_cert and ssl_key")
        verify = options.pop("ssl_verify", "cert").lower()
        if verify not in get_args(SslVerify):
            raise CassandraUrlError(f"ssl_verify: expected one of {', '.join(get_args(SslVerify))}, got {verify!r}")
        config["ssl_verify"] = verify
        config["connect_timeout_s"] = _float_option(options, "connect_timeout_s", DEFAULT_CONNECT_TIMEOUT_S)
        config["request_timeout_s"] = _float_option(options, "request_timeout_s", DEFAULT_REQUEST_TIMEOUT_S)
        namespace = options.pop("namespace", "")
        if namespace and not _NAMESPACE.fullmatch(namespace):
            raise CassandraUrlError(f"namespace: expected 1..64 letters, digits, _ or -, got {namespace!r}")
        config["namespace"] = namespace
        if options:
            raise CassandraUrlError(f"{sorted(options)[0]}: unknown option (known: {', '.join(_OPTIONS)})")
        return cls(**config)

    def url(self, *, with_password: bool = False) -> str:
        """The canonical URL of this config (every option spelled out, so :meth:`from_url` gives it back);
        the password is ``***`` unless ``with_password``: the form to log."""
        hosts = ",".join(f"[{h}]" if ":" in h else h for h in self.hosts)
        userinfo = ""
        if self.username:
            password = quote(self.password, safe="") if with_password else "***"
            userinfo = quote(self.username, safe="") + (f":{password}" if self.password else "") + "@"
        options: dict[str, str] = {}
        if self.datacenters:
            options["replication"] = ",".join(f"{dc}:{n}" for dc, n in self.datacenters)
        else:
            options["replication_factor"] = str(self.replication_factor)
        if self.local_dc:
            options["local_dc"] = self.local_dc
        options["consistency"] = self.consistency
        if self.ssl:
            options["ssl"] = "true"
            options.update({k: getattr(self, k) for k in ("ssl_ca", "ssl_cert", "ssl_key") if getattr(self, k)})
            options["ssl_verify"] = self.ssl_verify
        options["connect_timeout_s"] = repr(self.connect_timeout_s)
        options["request_timeout_s"] = repr(self.request_timeout_s)
        if self.namespace:
            options["namespace"] = self.namespace
        query = "&".join(f"{name}={quote(value, safe=':,/')}" for name, value in options.items())
        return f"{SCHEME}://{userinfo}{hosts}:{self.port}/{self.keyspace}?{query}"

    @property
    def replication(self) -> dict[str, str | int]:
        """The keyspace's replication map, as ``CREATE KEYSPACE`` takes it."""
        if self.datacenters:
            return {"class": "NetworkTopologyStrategy", **dict(self.datacenters)}
        if self.local_dc:
            return {"class": "NetworkTopologyStrategy", self.local_dc: self.replication_factor}
        return {"class": "SimpleStrategy", "replication_factor": self.replication_factor}

    def create_keyspace_cql(self) -> str:
        """``CREATE KEYSPACE IF NOT EXISTS`` for :attr:`keyspace` (an existing keyspace is left as it is)."""
        pairs = ", ".join(f"'{k}': {v!r}" if isinstance(v, str) else f"'{k}': {v}" for k, v in self.replication.items())
        return f"CREATE KEYSPACE IF NOT EXISTS {self.keyspace} WITH replication = {{{pairs}}} AND durable_writes = true"


def _parse_hosts(hostlist: str) -> tuple[tuple[str, ...], int]:
    if not hostlist:
        raise CassandraUrlError("hosts: expected at least one host, as cassandra://host1,host2:9042/keyspace")
    hosts: list[str] = []
    ports: set[int] = set()
    for item in hostlist.split(","):
        host, port = _split_host_port(item.strip())
        hosts.append(host)
        if port is not None:
            ports.add(port)
    if len(ports) > 1:
        raise CassandraUrlError(f"port: every host takes the same port, got {sorted(ports)}")
    if len(set(hosts)) != len(hosts):
        raise CassandraUrlError("hosts: a host is listed twice")
    return tuple(hosts), ports.pop() if ports else DEFAULT_PORT


def _split_host_port(item: str) -> tuple[str, int | None]:
    port_text: str | None = None
    if item.startswith("["):
        host, bracket, rest = item[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise CassandraUrlError(f"hosts: bad IPv6 address {item!r} (write [addr] or [addr]:port)")
        port_text = rest[1:] if rest else None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise CassandraUrlError(f"hosts: bad IPv6 address {item!r}") from None
    else:
        host, colon, port_part = item.partition(":")
        port_text = port_part if colon else None
        if not _HOSTNAME.fullmatch(host):
            raise CassandraUrlError(f"hosts: not a host name or address: {item!r}")
    if port_text is None:
        return host, None
    if not _is_number(port_text) or not 0 < int(port_text) < 65536:
        raise CassandraUrlError(f"port: expected 1..65535, got {port_text!r}")
    return host, int(port_text)


def _parse_query(query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in options:
            raise CassandraUrlError(f"{name}: given twice")
        if value:
            options[name] = value
        elif name not in _OPTIONS:
            raise CassandraUrlError(f"{name}: unknown option (known: {', '.join(_OPTIONS)})")
    return options


def _parse_datacenters(text: str) -> tuple[tuple[str, int], ...]:
    datacenters: list[tuple[str, int]] = []
    for item in text.split(","):
        name, colon, count = item.strip().partition(":")
        if not colon or not _DC.fullmatch(name) or not _is_number(count) or not 1 <= int(count) <= 100:
            raise CassandraUrlError(f"replication: expected dc1:3,dc2:3 (datacenter:replicas), got {item!r}")
        if any(name == seen for seen, _ in datacenters):
            raise CassandraUrlError(f"replication: datacenter {name!r} given twice")
        datacenters.append((name, int(count)))
    return tuple(datacenters)


def _is_number(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes "²", which ``int`` refuses."""
    return text.isascii() and text.isdigit()


def _int_option(options: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    text = options.pop(name, None)
    if text is None:
        return default
    if not _is_number(text) or not low <= int(text) <= high:
        raise CassandraUrlError(f"{name}: expected a whole number {low}..{high}, got {text!r}")
    return int(text)


def _float_option(options: dict[str, str], name: str, default: float) -> float:
    text = options.pop(name, None)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise CassandraUrlError(f"{name}: expected seconds > 0 (at most 3600), got {text!r}")
    return value


def _bool_option(options: dict[str, str], name: str) -> bool:
    text = options.pop(name, "false").lower()
    if text not in _TRUE | _FALSE:
        raise CassandraUrlError(f"{name}: expected true or false, got {text!r}")
    return text in _TRUE


# -- the session -------------------------------------------------------------------------------------------


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
                # its USE. A USE sent after connecting did not reach every connection: on a fresh 3-node
                # cluster a CREATE TABLE went out without a keyspace ("No keyspace has been specified").
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
        session torn down meanwhile aborts the process ("pure virtual method called": CASSCPP-3, fixed in
        the Apache C++ driver in 2026, not in the driver acsylla 1.2 bundles)."""
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
