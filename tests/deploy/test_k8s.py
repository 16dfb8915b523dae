"""The Kubernetes manifests in deploy/k8s: every document parses and is complete, every
reference between them resolves, the probes ask ``/healthz`` on the port the settings give, and
every ``HOTSPOT_*`` name they hold (environment variables, keys that become variables, and
names in comments) is a setting the worker reads; the settings they give pass the worker's own
checks."""

from __future__ import annotations

import ast
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import trustme
import yaml

from geofences.hotspots import load_hotspots
from stream.worker.settings import (
    COVERAGE_OPTIONS,
    ENV_OPTIONS,
    PRESENCE_OPTIONS,
    TOPIC_OPTIONS,
    WORKER_OPTIONS,
    worker_settings,
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
NAME = re.compile(r"HOTSPOT_[A-Z0-9_]*[A-Z0-9]")
REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def documents() -> list[dict[str, Any]]:
    return [d for p in manifest_files() for d in yaml.safe_load_all(p.read_text()) if d]


def kustomization() -> dict[str, Any]:
    return dict(yaml.safe_load((K8S / "kustomization.yaml").read_text()))


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in documents()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def container() -> dict[str, Any]:
    containers = one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    return {**secret.get("data", {}), **secret.get("stringData", {})}


def real_settings() -> set[str]:
    """Every variable the worker reads: its option tables, and each ``HOTSPOT_*`` string the
    shell's code names (the webhooks' and the control room's access variables)."""
    tables = (WORKER_OPTIONS, ENV_OPTIONS, TOPIC_OPTIONS, PRESENCE_OPTIONS, COVERAGE_OPTIONS)
    names = {option.env for table in tables for option in table.values()}
    for path in (ROOT / "stream").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            value = getattr(node, "value", None) if isinstance(node, ast.Constant) else None
            if isinstance(value, str) and NAME.fullmatch(value):
                names.add(value)
    return names


def env_of_pod(pod_ip: str = "10.0.0.7") -> dict[str, str]:
    """The worker's environment as the kubelet builds it: ConfigMaps and Secrets by envFrom,
    then ``env``, with ``$(NAME)`` references expanded."""
    spec = container()
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env.update(one("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(secret_data(one("Secret", source["secretRef"]["name"])))
    for item in spec["env"]:
        if "value" in item:
            env[item["name"]] = REFERENCE.sub(lambda m: env[m.group(1)], item["value"])
        else:
            assert item["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
            env[item["name"]] = pod_ip
    return env


def test_every_manifest_parses_and_is_complete() -> None:
    docs = documents()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Secret",
        "Secret",
        "Service",
    ]
    for doc in docs:
        assert doc["apiVersion"] and doc["metadata"]["name"], doc
        assert "namespace" not in doc["metadata"], "the manifests name no namespace"


def test_the_kustomization_lists_every_manifest_and_a_valid_hot_spot_file() -> None:
    k = kustomization()
    assert sorted(k["resources"]) == sorted(p.name for p in manifest_files())
    (generator,) = k["configMapGenerator"]
    assert generator["name"] == "hotspot-geofences"
    (file_name,) = generator["files"]
    collection = load_hotspots(K8S / file_name)
    assert collection.hotspots
    assert [image["name"] for image in k["images"]] == [container()["image"]]


def test_every_reference_resolves() -> None:
    generated = {g["name"]: g["files"] for g in kustomization()["configMapGenerator"]}
    config_maps = {d["metadata"]["name"] for d in documents() if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"] for d in documents() if d["kind"] == "Secret"}
    spec = container()
    for source in spec["envFrom"]:
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] in config_maps
        else:
            assert source["secretRef"]["name"] in secrets
    pod = one("Deployment")["spec"]["template"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    for mount in spec["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            assert volume["configMap"]["name"] in generated | dict.fromkeys(config_maps)
        if "secret" in volume:
            assert volume["secret"]["secretName"] in secrets
    labels = pod["metadata"]["labels"]
    deployment_selector = one("Deployment")["spec"]["selector"]["matchLabels"]
    for selector in (
        deployment_selector,
        one("Service")["spec"]["selector"],
        one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    assert [p["targetPort"] for p in one("Service")["spec"]["ports"]] == ["web"]
    assert "web" in ports


def test_every_hotspot_name_is_a_setting_the_worker_reads() -> None:
    known = real_settings()
    assert {"HOTSPOT_BROKER", "HOTSPOT_WEB_TOKEN", "HOTSPOT_WEBHOOKS"} <= known
    spec = container()
    named = {item["name"] for item in spec["env"]}
    for source in spec["envFrom"]:
        if "configMapRef" in source:
            named |= set(one("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            named |= set(secret_data(one("Secret", source["secretRef"]["name"])))
    helpers = {n for n in named if not n.startswith("HOTSPOT_")}
    assert helpers == {"POD_IP"}  # only a value the settings refer to
    (web_url,) = [item["value"] for item in spec["env"] if item["name"] == "HOTSPOT_WEB_URL"]
    assert "$(POD_IP)" in web_url
    in_text = {n for p in K8S.glob("*.yaml") for n in NAME.findall(p.read_text())}
    assert {n for n in named if n.startswith("HOTSPOT_")} <= in_text
    assert sorted(in_text - known) == []


def mounted(env: dict[str, str], root: Path) -> dict[str, str]:
    """``env`` as the worker would find its files: each ConfigMap and Secret volume's keys
    written under ``root`` at their mount path (as the kubelet mounts them), and every value
    naming a path under a mount pointed there instead. The TLS Secret's placeholder, which
    no worker accepts, is replaced by what an operator puts there: a CA certificate."""
    pod = one("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    generated = {g["name"]: g["files"] for g in kustomization()["configMapGenerator"]}
    mounts: dict[str, Path] = {}
    for mount in container()["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "secret" in volume:
            files = secret_data(one("Secret", volume["secret"]["secretName"]))
            if "ca.crt" in files:
                files["ca.crt"] = trustme.CA().cert_pem.bytes().decode()
        elif "configMap" in volume:
            names = generated[volume["configMap"]["name"]]
            files = {name: (K8S / name).read_text() for name in names}
        else:
            continue
        folder = root / mount["mountPath"].lstrip("/")
        folder.mkdir(parents=True)
        for name, content in files.items():
            (folder / name).write_text(content)
        mounts[mount["mountPath"]] = folder
    moved = dict(env)
    for name, value in env.items():
        for path, folder in mounts.items():
            if value.startswith(path + "/"):
                moved[name] = str(folder / value.removeprefix(path + "/"))
    return moved


def test_the_settings_pass_the_workers_checks(tmp_path: Path) -> None:
    env = env_of_pod()
    settings = worker_settings({}, mounted(env, tmp_path))
    assert settings.web_host == "0.0.0.0"
    assert settings.web_url == f"http://10.0.0.7:{settings.web_port}"
    assert settings.clock == "live"
    assert settings.geofences is not None and load_hotspots(settings.geofences).hotspots
    mounts = {m["name"]: PurePosixPath(m["mountPath"]) for m in container()["volumeMounts"]}
    (generated,) = kustomization()["configMapGenerator"]
    geofences = PurePosixPath(env["HOTSPOT_GEOFENCES"])
    assert geofences == mounts["geofences"] / generated["files"][0]
    assert PurePosixPath(settings.data_dir) == mounts["data"]
    ca_file = PurePosixPath(env["HOTSPOT_KAFKA_SSL_CAFILE"])
    assert ca_file.parent == mounts["kafka-tls"]
    assert ca_file.name in secret_data(one("Secret", "hotspot-kafka-tls"))


def web_port(tmp_path: Path) -> int:
    return int(worker_settings({}, mounted(env_of_pod(), tmp_path)).web_port)


@pytest.mark.parametrize("probe", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_probes_ask_healthz_on_the_web_port(probe: str, tmp_path: Path) -> None:
    spec = container()
    port = web_port(tmp_path)
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    get = spec[probe]["httpGet"]
    assert get["path"] == "/healthz"
    assert ports[get["port"]] == port
    annotations = one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)


def test_the_worker_runs_with_sized_resources_and_stops_cleanly() -> None:
    spec = container()
    assert spec["args"] == ["worker"]
    resources = spec["resources"]

    def mib(quantity: str) -> int:
        assert quantity.endswith("Mi"), quantity
        return int(quantity[:-2])

    assert mib(resources["requests"]["memory"]) <= mib(resources["limits"]["memory"])
    assert resources["requests"]["cpu"]
    pod = one("Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert pod["securityContext"]["runAsNonRoot"] is True
