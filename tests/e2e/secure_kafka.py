"""A local broker that demands TLS and SASL, as managed Kafka clusters do, with the keys made here.

:func:`make_pki` makes a CA, the broker's PKCS12 keystore (openssl) and truststore (keytool), a client
certificate with an encrypted PEM key that the CA signed, and a second, untrusted CA with a client
certificate of its own. :class:`SecureBroker` starts ``deploy/kafka/kafka.sh`` with three listeners:

- ``SASL_SSL`` (SCRAM-SHA-512 and SCRAM-SHA-256), the users created when the data dir is formatted;
- ``SSL`` with ``ssl.client.auth=required`` (mutual TLS; the principal is ``User:CN=<subject>``), also the
  inter-broker listener, as ``User:CN=broker``;
- the controller's, on TLS with the broker's certificate;

and the standard KRaft authorizer with no ACL allowing anything: ``admin`` and the broker are super users;
:meth:`SecureBroker.allow` grants a principal everything on topics and groups of the tests' names.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateAclsRequest

from shared.settings import Settings
from tests.conftest import KAFKA_SH
from tests.prerequisites import missing

TOPIC_PREFIXES = ("spans-", "otlp-", "zipkin-", "jaeger-")
GROUP_PREFIX = "ingest-"
"""What the ACLs of :meth:`SecureBroker.allow` cover: the names of ``tests.conftest.unique_settings``."""

# Kafka's ACL codes (org.apache.kafka.common.resource / acl)
TOPIC, GROUP = 2, 3
PREFIXED = 4
ALL_OPERATIONS, ALLOW = 2, 3

NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")
"""Elliptic-curve keys: made in milliseconds where RSA keys take a second each on a busy machine."""


def require_tools(*tools: str) -> None:
    """openssl and keytool (the JDK's) make the keys: missing, they fail the run in CI, else skip."""
    absent = [tool for tool in tools if shutil.which(tool) is None]
    if absent:
        missing(f"{', '.join(absent)} not installed: needed to make the test's keys and certificates")


def _run(*args: str | Path, cwd: Path) -> None:
    subprocess.run([str(a) for a in args], cwd=cwd, check=True, capture_output=True, timeout=120)


@dataclass(frozen=True)
class Pki:
    dir: Path
    store_password: str
    key_password: str
    """The client key's password (random: tests check it never shows in any output)."""

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def rogue_ca(self) -> Path:
        return self.dir / "rogue-ca.pem"

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"


def _certificate(d: Path, name: str, ca: str, *, password: str | None = None, san: str | None = None) -> None:
    """``<name>.key`` (encrypted with ``password`` if given) and ``<name>.pem`` signed by ``<ca>``."""
    key_args = ["-passout", f"pass:{password}"] if password else ["-nodes"]
    _run("openssl", "req", *NEW_KEY, *key_args, "-keyout", f"{name}.key", "-out", f"{name}.csr",
         "-subj", f"/CN={name}", cwd=d)  # fmt: skip
    extra: list[str] = []
    if san:
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        extra = ["-extfile", f"{name}.ext"]
    _run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
         "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", *extra, cwd=d)  # fmt: skip


def make_pki(d: Path) -> Pki:
    """The keys and certificates of :class:`SecureBroker` and its clients, in ``d``."""
    require_tools("openssl", "keytool")
    d.mkdir(parents=True, exist_ok=True)
    pki = Pki(d, store_password=secrets.token_hex(8), key_password=secrets.token_hex(8))
    for ca in ("ca", "rogue-ca"):
        _run("openssl", "req", "-x509", *NEW_KEY, "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
             "-days", "2", "-subj", f"/CN=tracing-test-{ca}", cwd=d)  # fmt: skip
    _certificate(d, "broker", "ca", san="IP:127.0.0.1,DNS:localhost")
    _run("openssl", "pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
         "-name", "broker", "-out", "broker.p12", "-passout", f"pass:{pki.store_password}", cwd=d)  # fmt: skip
    _run("keytool", "-importcert", "-noprompt", "-alias", "ca", "-file", "ca.pem", "-keystore", "truststore.p12",
         "-storetype", "PKCS12", "-storepass", pki.store_password, cwd=d)  # fmt: skip
    _certificate(d, "tracer-tls", "ca", password=pki.key_password)
    _certificate(d, "rogue-client", "rogue-ca", password=pki.key_password)
    return pki


@dataclass(frozen=True)
class SecureBroker:
    pki: Pki
    state: Path
    sasl_port: int
    ssl_port: int
    passwords: dict[str, str]
    """SCRAM user → password: ``admin`` (super user), ``tracer`` (SHA-512), ``tracer256`` (SHA-256), ``noacl``."""

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ssl_port}"

    def scram(self, base: Settings, user: str, *, mechanism: str = "SCRAM-SHA-512", **overrides: Any) -> Settings:
        """``base`` as ``user`` over SASL_SSL."""
        return _with(
            base,
            {
                "kafka_bootstrap": self.sasl_bootstrap,
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": mechanism,
                "kafka_sasl_username": user,
                "kafka_sasl_password": self.passwords.get(user, "unknown"),
                "kafka_ssl_cafile": str(self.pki.ca),
            },
            overrides,
        )

    def mtls(self, base: Settings, **overrides: Any) -> Settings:
        """``base`` over SSL with the client certificate ``CN=tracer-tls`` (its key encrypted)."""
        return _with(
            base,
            {
                "kafka_bootstrap": self.ssl_bootstrap,
                "kafka_security_protocol": "SSL",
                "kafka_ssl_cafile": str(self.pki.ca),
                "kafka_ssl_certfile": str(self.pki.cert("tracer-tls")),
                "kafka_ssl_keyfile": str(self.pki.key("tracer-tls")),
                "kafka_ssl_password": self.pki.key_password,
            },
            overrides,
        )

    async def allow(self, principal: str) -> None:
        """Grant ``principal`` (``User:name``) every operation on the topics and groups whose names start
        with :data:`TOPIC_PREFIXES` and :data:`GROUP_PREFIX`."""
        admin = AIOKafkaAdminClient(**self.scram(Settings(), "admin").kafka_options())
        await admin.start()
        try:
            for resource, prefix in [*((TOPIC, p) for p in TOPIC_PREFIXES), (GROUP, GROUP_PREFIX)]:
                request = CreateAclsRequest(resource, prefix, PREFIXED, principal, "*", ALL_OPERATIONS, ALLOW)
                response = await admin._send_request(request)  # aiokafka's admin has no ACL method
                assert [r[0] for r in response.creation_responses] == [0], response
        finally:
            await admin.close()


def _with(base: Settings, *changes: dict[str, Any]) -> Settings:
    values = {name: getattr(base, name) for name in base.__struct_fields__}
    for change in changes:
        values.update(change)
    return Settings.from_env({}, **values)  # validated: builds the TLS context as the product does


def broker_properties(pki: Pki, sasl_port: int, ssl_port: int, controller_port: int) -> str:
    stores = (
        f"ssl.keystore.type=PKCS12\nssl.keystore.location={pki.dir / 'broker.p12'}\n"
        f"ssl.keystore.password={pki.store_password}\n"
        f"ssl.truststore.type=PKCS12\nssl.truststore.location={pki.dir / 'truststore.p12'}\n"
        f"ssl.truststore.password={pki.store_password}\n"
    )
    jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return (
        f"listeners=SASL_SSL://127.0.0.1:{sasl_port},SSL://127.0.0.1:{ssl_port},CONTROLLER://127.0.0.1:{controller_port}\n"
        f"advertised.listeners=SASL_SSL://127.0.0.1:{sasl_port},SSL://127.0.0.1:{ssl_port}\n"
        "listener.security.protocol.map=SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:SSL\n"
        "inter.broker.listener.name=SSL\n"
        f"{stores}"
        "ssl.client.auth=required\n"
        "listener.name.sasl_ssl.ssl.client.auth=none\n"
        "sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256\n"
        f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}\n"
        f"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={jaas}\n"
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n"
        "super.users=User:CN=broker;User:admin\n"
        "allow.everyone.if.no.acl.found=false\n"
    )


def start_secure_broker(d: Path, ports: tuple[int, int, int]) -> SecureBroker:
    """Make the keys, start the broker (kafka.sh up waits until it is ready); stop it with :func:`stop`."""
    pki = make_pki(d / "pki")
    sasl_port, ssl_port, controller_port = ports
    properties = d / "secure.properties"
    properties.write_text(broker_properties(pki, sasl_port, ssl_port, controller_port))
    passwords = {user: secrets.token_hex(8) for user in ("admin", "tracer", "tracer256", "noacl")}
    mechanisms = {"tracer256": "SCRAM-SHA-256"}
    scram: list[str] = []
    for user, password in passwords.items():
        scram += ["--add-scram", f"{mechanisms.get(user, 'SCRAM-SHA-512')}=[name={user},password={password}]"]
    args = ["--port", str(sasl_port), "--controller-port", str(controller_port), "--dir", str(d / "kafka")]
    result = subprocess.run(
        ["bash", str(KAFKA_SH), "up", *args, "--properties", str(properties), *scram],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        stop(d)
        pytest.fail(f"the secured broker did not start:\n{result.stderr[-3000:]}")
    return SecureBroker(pki, d / "kafka", sasl_port, ssl_port, passwords)


def stop(d: Path) -> None:
    subprocess.run(["bash", str(KAFKA_SH), "down", "--dir", str(d / "kafka")], capture_output=True, timeout=60)
