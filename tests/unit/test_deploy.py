"""The deploy manifests (``deploy/docker-compose.yaml``, ``deploy/k8s/*.yaml``, and their Cassandra
variants ``deploy/docker-compose.cassandra.yaml`` and ``deploy/k8s/cassandra/``) agree with the code and
with each other: every ``TRACING_*`` variable they set is a real setting with a valid value, the workers
never outnumber the partitions, the API Service reaches the API pods, the probes hit ``/healthz``, and the
Cassandra store URLs name the nodes those manifests run, with a replication factor they can hold.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from query_api.routes import setup_routes
from shared.settings import PREFIX, Settings
from shared.store.cassandra.config import CassandraConfig

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "docker-compose.yaml"
COMPOSE_CASSANDRA = DEPLOY / "docker-compose.cassandra.yaml"
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
K8S_CASSANDRA = sorted((DEPLOY / "k8s" / "cassandra").glob("*.yaml"))
READ_BY_SETTINGS_ITSELF = {f"{PREFIX}CONFIG"}  # names the TOML file; not a field


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


class ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's merge tags: ``!override`` and ``!reset`` keep the value they tag."""


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


for _tag in ("!override", "!reset"):
    ComposeLoader.add_constructor(_tag, _tagged)


def compose_cassandra() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(COMPOSE_CASSANDRA.read_text(), Loader=ComposeLoader)  # noqa: S506 (SafeLoader)
    return loaded


def k8s_documents(paths: list[Path] = K8S) -> list[dict[str, Any]]:
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name!r} in deploy/k8s, found {len(matches)}"
    return matches[0]


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return found


def k8s_env(deployment: dict[str, Any], paths: list[Path] = K8S) -> dict[str, str]:
    """The environment a Deployment's first container sees: its ConfigMaps and Secrets, then ``env``; of
    two objects with one name in ``paths``, the later one, as ``kubectl apply`` in that order leaves it."""
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in k8s_documents(paths)}
    env: dict[str, str] = {}
    container = containers(deployment)[0]
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(by_name["ConfigMap", source["configMapRef"]["name"]]["data"])
        if "secretRef" in source:
            secret = by_name["Secret", source["secretRef"]["name"]]
            env.update(secret.get("stringData", {}))
    env.update({e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e})
    return env


def compose_env(service: str) -> dict[str, str]:
    environment = compose()["services"][service].get("environment", {})
    assert isinstance(environment, dict), f"compose service {service}: use the mapping form of environment"
    return {k: str(v) for k, v in environment.items()}


def tracing_names(text: str) -> set[str]:
    return set(re.findall(r"\b" + PREFIX + r"[A-Z0-9_]+\b", text))


def manifests() -> Iterator[Path]:
    yield COMPOSE
    yield COMPOSE_CASSANDRA
    yield from K8S
    yield DEPLOY / "k8s" / "cassandra" / "store.yaml"


# -- docker compose ------------------------------------------------------------------------------------


def test_compose_runs_kafka_in_kraft_mode_postgres_two_workers_and_the_api() -> None:
    services = compose()["services"]
    assert {"kafka", "postgres", "worker", "api"} <= set(services)
    kafka = {k: str(v) for k, v in services["kafka"]["environment"].items()}
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft: no ZooKeeper
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{kafka['KAFKA_NODE_ID']}@")
    assert "CONTROLLER" in kafka["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert not any("ZOOKEEPER" in key for key in kafka)
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["worker"]["command"][-1] == "ingest"
    assert services["api"]["command"][-1] == "query_api"
    for name in ("worker", "api"):
        url = compose_env(name)[f"{PREFIX}STORE_URL"]
        assert url.startswith("postgresql://") and "@postgres:" in url, f"{name} must use the postgres service"
        assert set(services[name]["depends_on"]) >= {"kafka", "postgres"}


def test_compose_api_listens_on_its_published_port() -> None:
    settings = Settings.from_env(compose_env("api"))
    host, port = settings.api_host_port
    assert host == "0.0.0.0"  # reachable from outside its container
    published = [str(p).rsplit(":", 1)[-1] for p in compose()["services"]["api"]["ports"]]
    assert str(port) in published


def _docker_compose() -> str:
    """The docker client, when it has the compose plugin (else the test skips)."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("the docker client has no compose plugin")
    return docker


def test_compose_file_is_valid_for_docker_compose() -> None:
    docker = _docker_compose()
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


# -- settings named anywhere -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", list(manifests()), ids=lambda p: p.name)
def test_every_tracing_variable_in_a_manifest_is_a_setting(path: Path) -> None:
    fields = {PREFIX + name.upper() for name in Settings.__struct_fields__} | READ_BY_SETTINGS_ITSELF
    names = tracing_names(path.read_text())
    assert names, f"{path.name} names no {PREFIX}* variable"
    assert names <= fields, f"{path.name}: unknown settings {sorted(names - fields)}"


@pytest.mark.parametrize("service", ["worker", "api"])
def test_compose_settings_are_valid(service: str) -> None:
    Settings.from_env(compose_env(service))  # raises SettingsError naming a bad value


@pytest.mark.parametrize("deployment", ["tracing-worker", "tracing-api"])
def test_k8s_settings_are_valid(deployment: str) -> None:
    env = k8s_env(k8s_object("Deployment", deployment))
    assert f"{PREFIX}STORE_URL" in env
    settings = Settings.from_env(env)
    assert settings.store_url.startswith("postgresql://")  # shared by every replica: never SQLite


# -- kubernetes ----------------------------------------------------------------------------------------


def test_k8s_workers_never_outnumber_the_partitions() -> None:
    worker = k8s_object("Deployment", "tracing-worker")
    partitions = Settings.from_env(k8s_env(worker)).partitions
    assert 1 <= worker["spec"]["replicas"] <= partitions


def test_k8s_deployments_select_their_own_pods() -> None:
    for doc in k8s_documents():
        if doc["kind"] == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), doc["metadata"]["name"]


def test_k8s_api_service_targets_the_api_pods_and_port() -> None:
    api = k8s_object("Deployment", "tracing-api")
    service = k8s_object("Service", "tracing-api")
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    worker_labels = k8s_object("Deployment", "tracing-worker")["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= worker_labels.items(), "the Service also selects workers"
    ports = [p for c in containers(api) for p in c.get("ports", [])]
    _, listen_port = Settings.from_env(k8s_env(api)).api_host_port
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        matching = [p for p in ports if target in (p.get("name"), p["containerPort"])]
        assert matching, f"Service port {port} targets no container port of the API"
        assert matching[0]["containerPort"] == listen_port, "the API listens elsewhere (TRACING_API_BIND)"


def test_k8s_probes_hit_healthz_on_a_served_route() -> None:
    app = web.Application()
    setup_routes(app)
    served = {r.canonical for r in app.router.resources()}
    assert "/healthz" in served
    api = k8s_object("Deployment", "tracing-api")
    probes = 0
    for doc in k8s_documents():
        if doc["kind"] != "Deployment":
            continue
        for container in containers(doc):
            names = {p.get("name") for p in container.get("ports", [])}
            numbers = {p["containerPort"] for p in container.get("ports", [])}
            for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
                probe = container.get(kind)
                if probe is None or "httpGet" not in probe:
                    continue
                probes += 1
                assert probe["httpGet"]["path"] == "/healthz", f"{doc['metadata']['name']} {kind}"
                assert probe["httpGet"]["port"] in names | numbers, f"{doc['metadata']['name']} {kind} port"
    api_container = containers(api)[0]
    assert "readinessProbe" in api_container and "livenessProbe" in api_container
    assert probes >= 2


# -- Cassandra: compose variant -------------------------------------------------------------------------


def test_compose_cassandra_is_cassandra_5_in_its_profile_with_a_cqlsh_healthcheck() -> None:
    cassandra = compose()["services"]["cassandra"]
    assert cassandra["image"].startswith("cassandra:5")
    assert cassandra["profiles"] == ["cassandra"]  # the default `up` stays Kafka + PostgreSQL
    test = " ".join(cassandra["healthcheck"]["test"])
    assert "cqlsh" in test and "system.local" in test
    env = {k: str(v) for k, v in cassandra["environment"].items()}
    assert ("MAX_HEAP_SIZE" in env) == ("HEAP_NEWSIZE" in env)  # the image takes both or neither
    assert any(v.endswith(":/var/lib/cassandra") for v in cassandra["volumes"])


@pytest.mark.parametrize("service", ["worker", "api"])
def test_compose_cassandra_variant_points_workers_and_api_at_the_node(service: str) -> None:
    base, variant = compose()["services"], compose_cassandra()["services"]
    assert set(variant) <= set(base), "the variant only changes services of the base file"
    env = compose_env(service) | {k: str(v) for k, v in variant[service]["environment"].items()}
    settings = Settings.from_env(env)
    config = CassandraConfig.from_url(settings.store_url)
    assert config.hosts == ("cassandra",) and config.port == 9042
    assert config.replication_factor == 1  # one node holds one replica
    assert config.local_dc == str(base["cassandra"]["environment"]["CASSANDRA_DC"])
    depends = variant[service]["depends_on"]
    assert set(depends) == {"kafka", "cassandra"}, "waits for Kafka and Cassandra, never for PostgreSQL"
    assert all(d["condition"] == "service_healthy" for d in depends.values())
    assert "!override" in COMPOSE_CASSANDRA.read_text()  # else Compose would merge postgres back in


def test_compose_cassandra_variant_is_valid_for_docker_compose() -> None:
    docker = _docker_compose()
    files = ["-f", str(COMPOSE), "-f", str(COMPOSE_CASSANDRA), "--profile", "cassandra"]
    result = subprocess.run([docker, "compose", *files, "config", "-q"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# -- Cassandra: kubernetes ------------------------------------------------------------------------------


def cassandra_object(kind: str) -> dict[str, Any]:
    matches = [d for d in k8s_documents(K8S_CASSANDRA) if d["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind} in deploy/k8s/cassandra, found {len(matches)}"
    return matches[0]


def test_k8s_cassandra_is_a_3_replica_statefulset_behind_its_headless_service() -> None:
    statefulset, service = cassandra_object("StatefulSet"), cassandra_object("Service")
    assert statefulset["spec"]["replicas"] == 3
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"  # headless: a stable DNS name per pod
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    for doc in k8s_documents():  # and no pod of the workers or the API
        if "template" in doc.get("spec", {}):
            assert not service["spec"]["selector"].items() <= doc["spec"]["template"]["metadata"]["labels"].items()
    budget = cassandra_object("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["spec"]["maxUnavailable"] == 1  # a QUORUM of 3 survives one node down


def test_k8s_cassandra_pods_keep_their_data_and_probe_cql() -> None:
    statefulset = cassandra_object("StatefulSet")
    (container,) = containers(statefulset)
    assert container["image"].startswith("cassandra:5")
    claims = {t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert claims and claims <= set(mounts) and "/var/lib/cassandra" in {mounts[c] for c in claims}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["cql"] == 9042
    probe = container["readinessProbe"]["tcpSocket"]["port"]
    assert probe in ports or probe in ports.values()
    assert {"requests", "limits"} <= set(container["resources"])
    env = {e["name"]: e["value"] for e in container["env"]}
    service = cassandra_object("Service")["metadata"]["name"]
    assert env["CASSANDRA_SEEDS"] == f"{statefulset['metadata']['name']}-0.{service}"


@pytest.mark.parametrize("deployment", ["tracing-worker", "tracing-api"])
def test_k8s_workers_and_api_on_cassandra_reach_every_node_at_quorum(deployment: str) -> None:
    env = k8s_env(k8s_object("Deployment", deployment), K8S + K8S_CASSANDRA)
    config = CassandraConfig.from_url(Settings.from_env(env).store_url)
    statefulset, service = cassandra_object("StatefulSet"), cassandra_object("Service")
    replicas, name = statefulset["spec"]["replicas"], statefulset["metadata"]["name"]
    assert set(config.hosts) == {f"{name}-{i}.{service['metadata']['name']}" for i in range(replicas)}
    cql = {p["name"]: p["port"] for p in service["spec"]["ports"]}["cql"]
    assert config.port == cql
    assert config.replication_factor == replicas == 3
    dc = {e["name"]: e["value"] for e in containers(statefulset)[0]["env"]}["CASSANDRA_DC"]
    assert config.local_dc == dc
    assert config.consistency in ("QUORUM", "LOCAL_QUORUM")  # reads see every acknowledged write


# -- packaging: what `pip install .` (the Dockerfile) puts in the image --------------------------------


def _pyproject() -> dict[str, Any]:
    import tomllib

    with open(DEPLOY.parent / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def test_the_wheel_holds_every_package_and_the_web_ui() -> None:
    """The package patterns of ``pyproject.toml`` (setuptools matches them with ``fnmatch``; namespace
    packages on, so a directory without ``__init__.py`` counts) take every directory of Python modules under
    the three top-level packages (a fixed list of top-level names left out ``shared.codecs`` and
    ``shared.store``, so the image would not start), and the web UI's static files as package data."""
    from fnmatch import fnmatchcase

    config = _pyproject()["tool"]["setuptools"]
    patterns = config["packages"]["find"]["include"]
    assert config["packages"]["find"]["namespaces"] is True
    root = DEPLOY.parent
    packages = {
        ".".join(path.parent.relative_to(root).parts)
        for top in ("shared", "ingest", "query_api")
        for path in (root / top).rglob("*.py")
        if "__pycache__" not in path.parts
    } | {"query_api.static"}
    left_out = sorted(p for p in packages if not any(fnmatchcase(p, pattern) for pattern in patterns))
    assert not left_out, f"packages missing from the wheel: {left_out}"
    assert {"shared.codecs", "shared.store"} <= packages
    assert config["package-data"]["query_api"] == ["static/*"]
    assert (root / "query_api" / "static" / "index.html").is_file()


def test_the_license_is_an_spdx_expression() -> None:
    """setuptools deprecates the ``{text = ...}`` table (a warning on every install); the SPDX string form
    needs setuptools 77, which the build system requires."""
    config = _pyproject()
    assert config["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in config["build-system"]["requires"]
