"""The ``cassandra://`` store URL: what it accepts, the defaults, one-line errors naming the option, the
password kept out of messages, and ``TRACING_STORE_URL`` taking the scheme."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.settings import Settings, SettingsError
from shared.store.cassandra.config import CassandraConfig, CassandraUrlError


def parse(url: str) -> CassandraConfig:
    return CassandraConfig.from_url(url)


def test_the_launcher_url_and_its_defaults() -> None:
    config = parse("cassandra://127.0.0.1,127.0.0.2:9042/tracing?replication_factor=2")
    assert config.hosts == ("127.0.0.1", "127.0.0.2")
    assert (config.port, config.keyspace, config.replication_factor) == (9042, "tracing", 2)
    assert (config.consistency, config.local_dc, config.ssl, config.username) == ("QUORUM", "", False, "")
    assert config.replication == {"class": "SimpleStrategy", "replication_factor": 2}
    assert config.create_keyspace_cql() == (
        "CREATE KEYSPACE IF NOT EXISTS tracing WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 2} AND durable_writes = true"
    )


@pytest.mark.parametrize(
    ("url", "hosts", "replication_factor"),
    [
        ("cassandra://db", ("db",), 1),
        ("cassandra://a,b/", ("a", "b"), 2),
        ("cassandra://a,b,c,d:9042", ("a", "b", "c", "d"), 3),  # never more than 3 by default
    ],
)
def test_without_options_port_keyspace_and_replicas_default(
    url: str, hosts: tuple[str, ...], replication_factor: int
) -> None:
    config = parse(url)
    assert (config.hosts, config.port, config.keyspace) == (hosts, 9042, "tracing")
    assert config.replication_factor == replication_factor


def test_every_option() -> None:
    config = parse(
        "cassandra://cass-0.cass.svc:9142,cass-1.cass.svc:9142/traces_v2?replication_factor=3&local_dc=eu-west"
        "&consistency=each_quorum&username=tracer&password=p%2Bss%26word&ssl=true&ssl_ca=/etc/ca.pem"
        "&ssl_cert=/etc/client.pem&ssl_key=/etc/client.key&ssl_verify=identity&connect_timeout_s=2.5"
        "&request_timeout_s=30"
    )
    assert config.hosts == ("cass-0.cass.svc", "cass-1.cass.svc") and config.port == 9142
    assert (config.keyspace, config.local_dc, config.consistency) == ("traces_v2", "eu-west", "EACH_QUORUM")
    assert (config.username, config.password) == ("tracer", "p+ss&word")
    assert (config.ssl, config.ssl_ca, config.ssl_cert, config.ssl_key) == (
        True,
        "/etc/ca.pem",
        "/etc/client.pem",
        "/etc/client.key",
    )
    assert (config.ssl_verify, config.connect_timeout_s, config.request_timeout_s) == ("identity", 2.5, 30.0)
    # a local datacenter means NetworkTopologyStrategy in it, and LOCAL_QUORUM unless told otherwise
    assert config.replication == {"class": "NetworkTopologyStrategy", "eu-west": 3}
    assert parse("cassandra://a/k?local_dc=dc1").consistency == "LOCAL_QUORUM"


def test_several_datacenters_and_credentials_before_the_host() -> None:
    config = parse("cassandra://svc%40corp:s3cr%3At@[::1]:9042/k?replication=dc1:3,dc2:2&local_dc=dc2")
    assert config.hosts == ("::1",)
    assert (config.username, config.password) == ("svc@corp", "s3cr:t")
    assert config.replication == {"class": "NetworkTopologyStrategy", "dc1": 3, "dc2": 2}
    assert config.replication_factor == 2  # the local datacenter's
    assert "'dc1': 3, 'dc2': 2" in config.create_keyspace_cql()


def test_a_namespace_isolates_rows_and_is_none_by_default() -> None:
    assert parse("cassandra://a/k").namespace == ""
    config = parse("cassandra://a/k?namespace=test_0f3A-9")
    assert config.namespace == "test_0f3A-9"
    assert "namespace=test_0f3A-9" in config.url()
    assert "namespace" not in parse("cassandra://a/k").url()


def test_empty_values_are_absent() -> None:
    config = parse("cassandra://a:9042/k?username=&password=&local_dc=&ssl=")
    assert (config.username, config.password, config.local_dc, config.ssl) == ("", "", "", False)


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("postgresql://a/k", "scheme"),
        ("cassandra:///k", "hosts"),
        ("cassandra://a b/k", "hosts"),
        ("cassandra://a,,b/k", "hosts"),
        ("cassandra://a,a/k", "hosts"),
        ("cassandra://[::zz]:9042/k", "hosts"),
        ("cassandra://a:0/k", "port"),
        ("cassandra://a:99999/k", "port"),
        ("cassandra://a:x/k", "port"),
        ("cassandra://a:９０４２/k", "port"),
        ("cassandra://a:9042,b:9043/k", "port"),
        ("cassandra://a/Tracing", "keyspace"),
        ("cassandra://a/1abc", "keyspace"),
        ("cassandra://a/k/extra", "keyspace"),
        ("cassandra://a/" + "k" * 49, "keyspace"),
        ("cassandra://a/k?replication_factor=0", "replication_factor"),
        ("cassandra://a/k?replication_factor=three", "replication_factor"),
        ("cassandra://a/k?replication_factor=-1", "replication_factor"),
        ("cassandra://a/k?replication_factor=%C2%B2", "replication_factor"),  # a superscript 2
        ("cassandra://a/k?replication_factor=2&replication=dc1:2", "replication_factor"),
        ("cassandra://a/k?replication=dc1", "replication"),
        ("cassandra://a/k?replication=dc1:%C2%B3", "replication"),
        ("cassandra://a/k?replication=dc1:3,dc1:2", "replication"),
        ("cassandra://a/k?replication=dc1:3,dc2:2&local_dc=dc3", "local_dc"),
        ("cassandra://a/k?local_dc=no%20spaces", "local_dc"),
        ("cassandra://a/k?consistency=MOST", "consistency"),
        ("cassandra://a/k?consistency=SERIAL", "consistency"),
        ("cassandra://a/k?password=x", "password"),
        ("cassandra://u:x@a/k?password=y", "password"),
        ("cassandra://a/k?ssl=maybe", "ssl"),
        ("cassandra://a/k?ssl_ca=/ca.pem", "ssl_ca"),
        ("cassandra://a/k?ssl=true&ssl_cert=/c.pem", "ssl_cert"),
        ("cassandra://a/k?ssl=true&ssl_verify=strict", "ssl_verify"),
        ("cassandra://a/k?connect_timeout_s=0", "connect_timeout_s"),
        ("cassandra://a/k?request_timeout_s=soon", "request_timeout_s"),
        ("cassandra://a/k?request_timeout_s=nan", "request_timeout_s"),
        ("cassandra://a/k?replication_factr=3", "replication_factr"),
        ("cassandra://a/k?bogus=", "bogus"),
        ("cassandra://a/k?consistency=ONE&consistency=ALL", "consistency"),
        ("cassandra://a/k?namespace=a%20b", "namespace"),
        ("cassandra://a/k?namespace=" + "n" * 65, "namespace"),
        ("cassandra://a/k?namespace=t%C3%A9st", "namespace"),
    ],
)
def test_a_bad_url_is_one_line_naming_the_option(url: str, named: str) -> None:
    with pytest.raises(CassandraUrlError) as raised:
        parse(url)
    message = str(raised.value)
    assert named in message and "\n" not in message, message


def test_the_password_is_never_shown() -> None:
    config = parse("cassandra://tracer:hunter2@a/k?consistency=ONE")
    assert "hunter2" not in repr(config) and "hunter2" not in str(config)
    assert "hunter2" not in config.url() and "tracer:***@" in config.url()
    for bad in ("cassandra://tracer:hunter2@a/k?consistency=MOST", "cassandra://tracer:hunter2@a/K"):
        with pytest.raises(CassandraUrlError) as raised:
            parse(bad)
        assert "hunter2" not in str(raised.value)
    with pytest.raises(SettingsError) as from_settings:
        Settings.from_env({"TRACING_STORE_URL": "cassandra://tracer:hunter2@a/k?consistency=MOST"})
    assert "hunter2" not in str(from_settings.value)


def test_settings_accept_the_cassandra_scheme_and_name_the_variable_and_the_option() -> None:
    url = "cassandra://127.0.0.1,127.0.0.2:9042/tracing?replication_factor=2"
    assert Settings.from_env({"TRACING_STORE_URL": url}).store_url == url
    with pytest.raises(SettingsError, match=r"^TRACING_STORE_URL: replication_factor: "):
        Settings.from_env({"TRACING_STORE_URL": "cassandra://a/k?replication_factor=0"})


# -- properties ---------------------------------------------------------------------------------------

names = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
hostnames = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]{1,8}){0,3}", fullmatch=True)
addresses = st.ip_addresses().map(str)
secrets = st.text(st.characters(codec="utf-8"), max_size=20)  # any text a URL can carry


@st.composite
def configs(draw: st.DrawFn) -> CassandraConfig:
    hosts = tuple(draw(st.lists(st.one_of(hostnames, addresses), min_size=1, max_size=4, unique=True)))
    ssl = draw(st.booleans())
    username = draw(st.one_of(st.just(""), secrets.filter(bool)))
    datacenters = draw(
        st.one_of(
            st.just(()),
            st.lists(st.tuples(names, st.integers(1, 5)), min_size=1, max_size=3, unique_by=lambda p: p[0]).map(tuple),
        )
    )
    local_dc = draw(st.one_of(st.just(""), st.sampled_from([dc for dc, _ in datacenters]) if datacenters else names))
    replicas = dict(datacenters)
    return CassandraConfig(
        hosts=hosts,
        port=draw(st.integers(1, 65535)),
        keyspace=draw(names),
        replication_factor=(replicas[local_dc] if local_dc else datacenters[0][1])
        if datacenters
        else draw(st.integers(1, 100)),
        datacenters=datacenters,
        local_dc=local_dc,
        consistency=draw(st.sampled_from(["ONE", "QUORUM", "LOCAL_QUORUM", "ALL"])),
        username=username,
        password=draw(secrets) if username else "",
        ssl=ssl,
        ssl_ca=draw(st.sampled_from(["", "/etc/ssl/ca.pem", "certs/ca bundle.pem"])) if ssl else "",
        ssl_verify=draw(st.sampled_from(["none", "cert", "identity"])) if ssl else "cert",
        connect_timeout_s=draw(st.floats(0.01, 3600)),
        request_timeout_s=draw(st.floats(0.01, 3600)),
        namespace=draw(st.one_of(st.just(""), st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True))),
    )


@given(configs())
def test_a_config_survives_its_own_url(config: CassandraConfig) -> None:
    assert CassandraConfig.from_url(config.url(with_password=True)) == config


def _parses_or_fails_in_one_line(url: str) -> None:
    """``url`` parses, or fails with the URL error, whose message is one line."""
    message = ""
    try:
        parse(url)
    except CassandraUrlError as exc:
        message = str(exc)
    assert "\n" not in message


@given(st.text(max_size=80), st.text(max_size=80))
def test_any_text_parses_or_fails_with_the_url_error(netloc: str, query: str) -> None:
    _parses_or_fails_in_one_line(f"cassandra://{netloc}/k?{query}")


@given(
    st.sampled_from(["replication_factor", "replication", "local_dc", "consistency", "ssl", "connect_timeout_s"]),
    st.text(max_size=12),
)
def test_any_value_of_an_option_parses_or_fails_with_the_url_error(name: str, value: str) -> None:
    _parses_or_fails_in_one_line(f"cassandra://a:9042/k?{urlencode({name: value})}")
