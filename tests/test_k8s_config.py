"""The gcp profile's Kubernetes files (k8s/), checked with dagster-k8s's and kubernetes' own code.

No cluster exists here, so the only stand-in is the Kubernetes API itself: a recording BatchV1Api
receives the Job that the real K8sRunLauncher (built from our config through Dagster's config
schema, on a real Dagster instance) would create. Everything else — config schemas, container
context merging, the allow-list for run tags, Job construction, model parsing — is the libraries' code.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
import shutil
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import kubernetes
import pytest
import yaml
from dagster._config import process_config
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.instance.config import dagster_instance_config
from dagster._core.launcher import LaunchRunContext
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.test_utils import create_run_for_test
from dagster_k8s import K8sRunLauncher
from kubernetes.utils import parse_quantity

from farm_dagster.k8s_config import (
    HELM_VALUES_YAML,
    INSTANCE_YAML,
    K8S_DIR,
    MANIFEST_FILES,
    K8sConfigError,
    egress_allows,
    helm_run_launcher_config,
    load_yaml,
    load_yaml_documents,
    main,
    manifest_model,
    process_run_launcher_config,
    run_launcher_config,
)
from farm_dagster.settings import FarmSettings, Profile, load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN_IMAGE = "europe-west1-docker.pkg.dev/farm-test/farm/farm:3f2c1d0"
ORIGIN = JobPythonOrigin(
    job_name="backtest_agent_job",
    repository_origin=RepositoryPythonOrigin(
        executable_path=sys.executable,
        code_pointer=ModuleCodePointer("farm_dagster.definitions", "defs", working_directory=None),
        container_image=RUN_IMAGE,
    ),
)
OFFLINE_KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:9"}}],
    "users": [{"name": "offline", "user": {"token": "offline"}}],
    "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "offline"}}],
    "current-context": "offline",
}


def _instance_yaml() -> dict[str, Any]:
    return load_yaml(INSTANCE_YAML)


def _helm_values() -> dict[str, Any]:
    return load_yaml(HELM_VALUES_YAML)


def _policies() -> list[dict[str, Any]]:
    return load_yaml_documents(K8S_DIR / "network-policies.yaml")


def _readme_configmap_keys() -> dict[str, str]:
    """KEY -> value of every `--from-literal=KEY=value` in the README's `farm-env` ConfigMap command."""
    text = (K8S_DIR / "README.md").read_text()
    match = re.search(r"kubectl create configmap farm-env(.*?)\|\s*kubectl apply", text, re.S)
    assert match, "k8s/README.md has no `kubectl create configmap farm-env` command"
    return dict(re.findall(r"--from-literal=([A-Z0-9_]+)=(\S*)", match.group(1)))


def _env_sources(node: Any) -> set[str]:
    """Names of every `{env: NAME}` config source inside a YAML tree."""
    if isinstance(node, dict):
        if set(node) == {"env"} and isinstance(node["env"], str):
            return {node["env"]}
        return set().union(*(_env_sources(value) for value in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_env_sources(value) for value in node)) if node else set()
    return set()


@pytest.fixture
def farm_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment a pod gets from ConfigMap `farm-env` and the Postgres secret."""
    env = {
        key: value.strip('"') if value and not value.startswith("$") else f"test-{key.lower()}"
        for key, value in _readme_configmap_keys().items()
    }
    env["DAGSTER_PG_PASSWORD"] = "test-password"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(OFFLINE_KUBECONFIG))
    return path


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


class RecordingBatchApi:
    """Stands in for the Kubernetes API server: keeps every Job the launcher creates."""

    def __init__(self) -> None:
        self.created: list[tuple[str, kubernetes.client.V1Job]] = []

    def create_namespaced_job(self, body: kubernetes.client.V1Job, namespace: str, **_: Any) -> Any:
        self.created.append((namespace, body))
        return body


def _launcher(config: dict[str, Any], kubeconfig: Path, api: RecordingBatchApi) -> K8sRunLauncher:
    """The real K8sRunLauncher from ``config``, loading an offline kubeconfig instead of in-cluster config."""
    offline = {**config, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    processed = process_run_launcher_config(offline)
    return K8sRunLauncher(inst_data=None, k8s_client_batch_api=api, k8s_client_core_api=api, **processed)


def _launch(
    config: dict[str, Any], kubeconfig: Path, instance: dg.DagsterInstance, tags: dict[str, str] | None = None
) -> tuple[str, kubernetes.client.V1Job, RecordingBatchApi]:
    api = RecordingBatchApi()
    launcher = _launcher(config, kubeconfig, api)
    launcher.register_instance(instance)
    run = create_run_for_test(instance, job_name=ORIGIN.job_name, tags=tags or {}, job_code_origin=ORIGIN)
    launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    assert len(api.created) == 1, "one run must create exactly one Kubernetes Job"
    namespace, job = api.created[0]
    return namespace, job, api


# ------------------------------------------------------------------------------------------------
# dagster.yaml of the gcp profile


def test_instance_yaml_passes_dagster_instance_schema(tmp_path: Path) -> None:
    shutil.copy(INSTANCE_YAML, tmp_path / "dagster.yaml")
    config, custom_class = dagster_instance_config(str(tmp_path))
    assert custom_class is None
    assert set(config["storage"]) == {"postgres"}
    assert config["run_monitoring"]["max_resume_run_attempts"] == 0


def test_configurable_sections_pass_their_own_class_schema(farm_env: dict[str, str]) -> None:
    instance = _instance_yaml()
    resolved = {}
    for key in ("run_launcher", "run_coordinator", "compute_logs"):
        section = instance[key]
        klass = getattr(importlib.import_module(section["module"]), section["class"])
        result = process_config(klass.config_type(), section["config"])
        assert result.success, f"{key}: {[error.message for error in result.errors]}"
        resolved[key] = result.value
    assert resolved["compute_logs"]["bucket"] == farm_env["FARM_GCS_BUCKET"]
    assert resolved["run_coordinator"]["max_concurrent_runs"] == 20
    assert resolved["run_launcher"]["job_namespace"] == "farm-runs"


def test_every_env_source_is_provided_to_the_pods() -> None:
    """Every `{env: X}` of the instance must come from ConfigMap farm-env or the Postgres secret."""
    provided = set(_readme_configmap_keys()) | {"DAGSTER_PG_PASSWORD"}
    assert _env_sources(_instance_yaml()) <= provided
    assert _env_sources(_helm_values()) <= provided
    assert _readme_configmap_keys()["FARM_PROFILE"] == "gcp"


def test_farm_env_configmap_yields_valid_gcp_settings(farm_env: dict[str, str]) -> None:
    """The pods' FARM_* variables are settings the platform knows, and they pass its gcp validation."""
    unknown = [
        key
        for key in farm_env
        if key.startswith("FARM_") and key[5:].lower() not in FarmSettings.model_fields
    ]
    assert unknown == []
    settings = load_settings()
    assert settings.profile is Profile.GCP
    assert settings.gcs_bucket == farm_env["FARM_GCS_BUCKET"]
    assert settings.firestore_database == "(default)"


@pytest.mark.parametrize(
    "mutation",
    [
        {"job_namespce": "farm-runs"},
        {"run_k8s_config": {"pod_spec": {"runtimeClassName": "gvisor"}}},
        {"resources": {"limit": {"cpu": "1"}}},
    ],
)
def test_k8s_run_launcher_schema_rejects_misspelt_fields(mutation: dict[str, Any]) -> None:
    config = {**run_launcher_config(_instance_yaml()), **mutation}
    with pytest.raises(K8sConfigError, match="invalid K8sRunLauncher config"):
        process_run_launcher_config(config)


# ------------------------------------------------------------------------------------------------
# The run pod, built by dagster-k8s


def test_run_pod_is_sandboxed_and_locked_down(kubeconfig: Path, instance: dg.DagsterInstance) -> None:
    namespace, job, _ = _launch(run_launcher_config(_instance_yaml()), kubeconfig, instance)
    assert namespace == "farm-runs"
    pod = job.spec.template.spec
    assert pod.runtime_class_name == "gvisor"
    assert pod.node_selector == {"sandbox.gke.io/runtime": "gvisor"}
    assert any(
        t.key == "sandbox.gke.io/runtime" and t.value == "gvisor" and t.effect == "NoSchedule"
        for t in pod.tolerations
    )
    assert pod.automount_service_account_token is False
    assert pod.enable_service_links is False
    assert pod.service_account_name == "farm-run-worker"
    assert pod.restart_policy == "Never"
    assert pod.security_context.run_as_non_root is True
    assert pod.security_context.seccomp_profile.type == "RuntimeDefault"

    [container] = pod.containers
    assert container.image == RUN_IMAGE
    assert "execute_run" in container.args
    ctx = container.security_context
    assert ctx.run_as_non_root is True and ctx.run_as_user == 10001
    assert ctx.read_only_root_filesystem is True
    assert ctx.allow_privilege_escalation is False
    assert ctx.privileged is False
    assert ctx.capabilities.drop == ["ALL"]
    assert ctx.seccomp_profile.type == "RuntimeDefault"

    for kind in ("requests", "limits"):
        quantities = getattr(container.resources, kind)
        assert {"cpu", "memory", "ephemeral-storage"} <= set(quantities), kind
    for name in ("cpu", "memory"):
        assert parse_quantity(container.resources.requests[name]) <= parse_quantity(
            container.resources.limits[name]
        )

    # A read-only root filesystem needs writable scratch: /tmp and DAGSTER_HOME are emptyDirs.
    mounts = {mount.mount_path: mount.name for mount in container.volume_mounts}
    volumes = {volume.name: volume for volume in pod.volumes}
    for path in ("/tmp", "/opt/dagster/dagster_home"):
        assert volumes[mounts[path]].empty_dir is not None, path
    env = {item.name: item for item in container.env}
    assert env["DAGSTER_HOME"].value == "/opt/dagster/dagster_home"
    assert env["NUMBA_CACHE_DIR"].value.startswith("/tmp/")
    assert env["DAGSTER_PG_PASSWORD"].value_from.secret_key_ref.name == "dagster-postgresql-secret"
    sources = {
        (s.config_map_ref.name if s.config_map_ref else None, s.secret_ref.name if s.secret_ref else None)
        for s in container.env_from
    }
    assert sources == {("farm-env", None), (None, "farm-env")}

    assert job.spec.backoff_limit == 0
    assert job.spec.active_deadline_seconds == 7200
    assert job.metadata.labels["farm.io/role"] == "run-worker"


def test_job_body_sent_to_the_api_server_is_camel_case(
    kubeconfig: Path, instance: dg.DagsterInstance
) -> None:
    _, job, _ = _launch(run_launcher_config(_instance_yaml()), kubeconfig, instance)
    body = kubernetes.client.ApiClient().sanitize_for_serialization(job)
    spec = body["spec"]["template"]["spec"]
    assert spec["runtimeClassName"] == "gvisor"
    assert spec["nodeSelector"] == {"sandbox.gke.io/runtime": "gvisor"}
    assert spec["automountServiceAccountToken"] is False
    assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert json.loads(json.dumps(body)) == body


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"pod_spec_config": {"runtime_class_name": "runc"}}, "pod_spec_config.runtime_class_name"),
        ({"pod_spec_config": {"nodeSelector": {"pool": "default"}}}, "pod_spec_config.node_selector"),
        ({"pod_spec_config": {"serviceAccountName": "dagster"}}, "pod_spec_config.service_account_name"),
        (
            {"pod_spec_config": {"automountServiceAccountToken": True}},
            "pod_spec_config.automount_service_account_token",
        ),
        (
            {"container_config": {"securityContext": {"privileged": True}}},
            "container_config.security_context",
        ),
        ({"container_config": {"env": [{"name": "FARM_PROFILE", "value": "local"}]}}, "container_config.env"),
    ],
)
def test_run_tags_cannot_take_a_run_out_of_the_sandbox(
    override: dict[str, Any], field: str, kubeconfig: Path, instance: dg.DagsterInstance
) -> None:
    api = RecordingBatchApi()
    launcher = _launcher(run_launcher_config(_instance_yaml()), kubeconfig, api)
    launcher.register_instance(instance)
    run = create_run_for_test(
        instance,
        job_name=ORIGIN.job_name,
        tags={"dagster-k8s/config": json.dumps(override)},
        job_code_origin=ORIGIN,
    )
    with pytest.raises(Exception, match=f"violated the allowed list: {re.escape(field)}"):
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    assert api.created == []


def test_run_tags_may_resize_a_run_pod(kubeconfig: Path, instance: dg.DagsterInstance) -> None:
    bigger = {
        "container_config": {
            "resources": {"requests": {"cpu": "2", "memory": "6Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}}
        }
    }
    _, job, _ = _launch(
        run_launcher_config(_instance_yaml()),
        kubeconfig,
        instance,
        tags={"dagster-k8s/config": json.dumps(bigger)},
    )
    pod = job.spec.template.spec
    assert pod.containers[0].resources.limits["memory"] == "8Gi"
    assert pod.runtime_class_name == "gvisor"


def test_run_worker_instance_needs_no_kubernetes_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, farm_env: dict[str, str]
) -> None:
    """Run pods load this instance without a service-account token; nothing may build the launcher early."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)

    def load(config: dict[str, Any], home: Path) -> None:
        home.mkdir()
        # No Postgres here: the storage section is swapped for SQLite; every other section is ours.
        config = {**config, "storage": {"sqlite": {"base_dir": str(home / "storage")}}}
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            assert instance.run_monitoring_enabled
        finally:
            instance.dispose()

    load(_instance_yaml(), tmp_path / "ours")

    resuming = copy.deepcopy(_instance_yaml())
    resuming["run_monitoring"]["max_resume_run_attempts"] = 1
    with pytest.raises(kubernetes.config.ConfigException):
        load(resuming, tmp_path / "resuming")


# ------------------------------------------------------------------------------------------------
# Helm values


def test_helm_values_render_the_same_run_pod(kubeconfig: Path, instance: dg.DagsterInstance) -> None:
    values = _helm_values()
    helm_config = helm_run_launcher_config(values, release_name="dagster", release_namespace="dagster")
    result = process_config(K8sRunLauncher.config_type(), helm_config)
    assert result.success, [error.message for error in result.errors]

    def pod_of(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        namespace, job, _ = _launch(config, kubeconfig, instance)
        spec = kubernetes.client.ApiClient().sanitize_for_serialization(job.spec.template.spec)
        for container in spec["containers"]:
            container.pop("args")  # carries the run id
        return namespace, spec

    assert pod_of(helm_config) == pod_of(run_launcher_config(_instance_yaml()))


def test_helm_values_match_the_instance_and_the_code_location() -> None:
    values, instance = _helm_values(), _instance_yaml()

    queued = values["dagsterDaemon"]["runCoordinator"]
    assert queued["enabled"] and queued["type"] == "QueuedRunCoordinator"
    camel = queued["config"]["queuedRunCoordinator"]
    snake = {
        "max_concurrent_runs": camel["maxConcurrentRuns"],
        "dequeue_interval_seconds": camel["dequeueIntervalSeconds"],
        "tag_concurrency_limits": camel["tagConcurrencyLimits"],
    }
    assert process_config(QueuedRunCoordinator.config_type(), snake).success
    assert snake == instance["run_coordinator"]["config"]

    monitoring = values["dagsterDaemon"]["runMonitoring"]
    assert monitoring["maxResumeRunAttempts"] == instance["run_monitoring"]["max_resume_run_attempts"] == 0
    assert values["computeLogManager"]["type"] == "GCSComputeLogManager"
    gcs = values["computeLogManager"]["config"]["gcsComputeLogManager"]
    assert gcs["bucket"] == instance["compute_logs"]["config"]["bucket"]
    assert values["postgresql"]["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    assert (
        values["global"]["postgresqlSecretName"] == run_launcher_config(instance)["postgres_password_secret"]
    )

    [deployment] = values["dagster-user-deployments"]["deployments"]
    module = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    assert deployment["name"] == "farm" == workspace["load_from"][0]["python_module"]["location_name"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", module]
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": False}


def test_helm_translation_refuses_unknown_launcher_keys() -> None:
    values = copy.deepcopy(_helm_values())
    values["runLauncher"]["config"]["k8sRunLauncher"]["runtimeClassName"] = "gvisor"
    with pytest.raises(K8sConfigError, match="runtimeClassName"):
        helm_run_launcher_config(values)


# ------------------------------------------------------------------------------------------------
# Manifests


@pytest.mark.parametrize("name", MANIFEST_FILES)
def test_manifests_parse_into_strict_kubernetes_models(name: str) -> None:
    docs = load_yaml_documents(K8S_DIR / name)
    assert docs
    for doc in docs:
        model = manifest_model(doc, name)
        assert model.kind == doc["kind"] and model.metadata.name == doc["metadata"]["name"]


def test_manifest_model_rejects_a_misplaced_field() -> None:
    [policy, *_] = _policies()
    broken = copy.deepcopy(policy)
    broken["spec"]["podSelecter"] = broken["spec"].pop("podSelector")
    with pytest.raises(K8sConfigError, match="podSelecter"):
        manifest_model(broken, "network-policies.yaml")


def test_runtime_class_matches_the_run_pods() -> None:
    [runtime_class] = load_yaml_documents(K8S_DIR / "runtimeclass-gvisor.yaml")
    pod_spec = run_launcher_config(_instance_yaml())["run_k8s_config"]["pod_spec_config"]
    assert runtime_class["metadata"]["name"] == pod_spec["runtimeClassName"] == runtime_class["handler"]
    assert runtime_class["scheduling"]["nodeSelector"] == pod_spec["nodeSelector"]
    assert runtime_class["scheduling"]["tolerations"] == pod_spec["tolerations"]


def test_run_namespace_is_restricted_and_its_quota_fits_the_run_queue() -> None:
    docs = load_yaml_documents(K8S_DIR / "namespaces.yaml")
    namespaces = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Namespace"}
    assert {"dagster", "farm-runs", "paper-trader"} <= set(namespaces)
    for name in ("farm-runs", "paper-trader"):
        assert namespaces[name]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"

    [quota] = [d for d in docs if d["kind"] == "ResourceQuota" and d["metadata"]["namespace"] == "farm-runs"]
    hard = quota["spec"]["hard"]
    runs = _instance_yaml()["run_coordinator"]["config"]["max_concurrent_runs"]
    resources = run_launcher_config(_instance_yaml())["resources"]
    assert int(hard["pods"]) >= runs
    for kind in ("requests", "limits"):
        for name, quantity in resources[kind].items():
            assert parse_quantity(hard[f"{kind}.{name}"]) >= runs * parse_quantity(quantity), f"{kind}.{name}"


def test_rbac_lets_the_daemon_launch_runs_and_gives_runs_nothing() -> None:
    docs = {
        (d["kind"], d["metadata"]["name"]): d
        for d in load_yaml_documents(K8S_DIR / "run-namespace-rbac.yaml")
    }
    launcher = run_launcher_config(_instance_yaml())
    worker = docs[("ServiceAccount", launcher["service_account_name"])]
    assert worker["metadata"]["namespace"] == launcher["job_namespace"]
    assert worker["automountServiceAccountToken"] is False

    binding = docs[("RoleBinding", "dagster-run-launcher")]
    assert binding["metadata"]["namespace"] == launcher["job_namespace"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": _helm_values()["serviceAccount"]["name"], "namespace": "dagster"}
    ]
    role = docs[("Role", binding["roleRef"]["name"])]
    job_rules = [r for r in role["rules"] if r["apiGroups"] == ["batch"] and "jobs" in r["resources"]]
    assert {"create", "delete", "get", "list", "watch"} <= set(job_rules[0]["verbs"])
    assert not any(
        binding["kind"] == "RoleBinding" and s["name"] == launcher["service_account_name"]
        for binding in docs.values()
        for s in binding.get("subjects", [])
    )


# ------------------------------------------------------------------------------------------------
# Network policies


@pytest.mark.parametrize("namespace", ["farm-runs", "paper-trader"])
def test_namespace_has_default_deny_and_no_ingress(namespace: str) -> None:
    mine = [p for p in _policies() if p["metadata"]["namespace"] == namespace]
    deny = [
        p
        for p in mine
        if p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ]
    assert deny and not deny[0]["spec"].get("ingress") and not deny[0]["spec"].get("egress")
    assert all(not p["spec"].get("ingress") for p in mine)


def test_run_pod_egress_rules_name_destinations_and_ports() -> None:
    for policy in (p for p in _policies() if p["metadata"]["namespace"] == "farm-runs"):
        for rule in policy["spec"].get("egress") or []:
            assert rule.get("to"), (
                f"{policy['metadata']['name']}: an egress rule without `to` allows every address"
            )
            assert rule.get("ports"), (
                f"{policy['metadata']['name']}: an egress rule without ports allows every port"
            )
            for peer in rule["to"]:
                assert peer.get("ipBlock", {}).get("cidr") != "0.0.0.0/0"


def test_dns_goes_to_kube_dns_only() -> None:
    for namespace in ("farm-runs", "paper-trader"):
        rules = [
            r
            for p in _policies()
            if p["metadata"]["namespace"] == namespace
            for r in p["spec"].get("egress") or []
        ]
        dns = [r for r in rules if {"protocol": "UDP", "port": 53} in r.get("ports", [])]
        assert dns, namespace
        peers = dns[0]["to"]
        assert {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        } in peers
        assert {"protocol": "TCP", "port": 53} in dns[0]["ports"]


@pytest.mark.parametrize(
    ("ip", "port", "allowed"),
    [
        ("199.36.153.8", 443, True),  # private.googleapis.com: BigQuery, GCS, Firestore, Pub/Sub
        ("199.36.153.11", 443, True),
        ("199.36.153.12", 443, False),  # outside the /30
        ("199.36.153.9", 80, False),
        ("10.100.0.3", 5432, True),  # Cloud SQL (Dagster storage)
        ("10.100.4.9", 6379, True),  # Memorystore
        ("10.100.0.3", 22, False),
        ("10.0.0.1", 443, False),  # nodes / control plane
        ("169.254.169.254", 80, True),  # metadata server (Workload Identity)
        ("169.254.169.252", 988, True),
        ("142.250.74.110", 443, False),  # public Google address
        ("8.8.8.8", 53, False),  # DNS only via kube-dns
        ("35.190.0.1", 443, False),  # the internet
    ],
)
def test_run_pod_egress(ip: str, port: int, allowed: bool) -> None:
    assert (
        egress_allows(_policies(), "farm-runs", ip, port, pod_labels={"farm.io/role": "run-worker"})
        is allowed
    )


@pytest.mark.parametrize(
    ("ip", "port", "allowed"),
    [
        ("35.190.0.1", 443, True),  # Alpaca (public HTTPS) through Cloud NAT
        ("35.190.0.1", 80, False),
        ("199.36.153.10", 443, True),
        ("10.100.4.9", 6379, True),  # Memorystore
        ("10.100.0.3", 5432, False),  # not Dagster's Postgres
        ("10.8.0.5", 443, False),  # cluster pods and services
        ("192.168.1.1", 443, False),
        ("169.254.169.254", 443, False),
    ],
)
def test_paper_trader_egress(ip: str, port: int, allowed: bool) -> None:
    assert egress_allows(_policies(), "paper-trader", ip, port) is allowed


def test_egress_is_open_where_no_policy_selects() -> None:
    """The evaluator itself: a namespace without policies is unrestricted (so a deny above is real)."""
    assert egress_allows(_policies(), "dagster", "35.190.0.1", 443) is True


# ------------------------------------------------------------------------------------------------
# The pre-deploy check


def test_check_command_passes_on_k8s_dir(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(K8S_DIR)]) == 0
    assert "NetworkPolicy farm-runs/default-deny-all" in capsys.readouterr().out


def test_check_command_names_the_broken_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, broken)
    path = broken / INSTANCE_YAML.name
    path.write_text(path.read_text().replace("job_namespace: farm-runs", "job_namespace: [farm-runs"))
    assert main([str(broken)]) == 1
    assert re.search(r"dagster-instance-gcp\.yaml:\d+", capsys.readouterr().err)
