"""The Cassandra store URL, parsed and validated into a :class:`CassandraConfig`.

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
"""

from __future__ import annotations

import ipaddress
import re
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
        _placement(options, len(hosts), config)
        local_dc = config["local_dc"]
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
        _tls(options, config)
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


def _placement(options: dict[str, str], hosts: int, config: dict[str, Any]) -> None:
    """``local_dc``, ``replication`` and ``replication_factor`` from ``options`` into ``config``."""
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
        config["replication_factor"] = _int_option(options, "replication_factor", min(hosts, 3), 1, 100)


def _tls(options: dict[str, str], config: dict[str, Any]) -> None:
    """``ssl`` and its options from ``options`` into ``config``."""
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
