"""Load and check the gcp profile's Kubernetes files (k8s/) with dagster-k8s's and kubernetes' own code.

Why: a wrong field name in a run-launcher config or a manifest is only noticed when the first run pod
fails to start on GKE. Here the run launcher section goes through K8sRunLauncher's real config schema,
manifests through the kubernetes client's strict models, and network policies through a small
evaluator of their egress rules, all without a cluster. ``python -m farm_dagster.k8s_config`` runs
the same checks before a deploy (k8s/README.md).
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import kubernetes.client
import yaml
from dagster._config import process_config, validate_config
from dagster_k8s import K8sRunLauncher
from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict

from farm_dagster import PROJECT_ROOT

K8S_DIR = PROJECT_ROOT / "k8s"
INSTANCE_YAML = K8S_DIR / "dagster-instance-gcp.yaml"
HELM_VALUES_YAML = K8S_DIR / "dagster-helm-values.yaml"
MANIFEST_FILES = (
    "namespaces.yaml",
    "runtimeclass-gvisor.yaml",
    "run-namespace-rbac.yaml",
    "network-policies.yaml",
)


class K8sConfigError(ValueError):
    """A deployment file is malformed or does not satisfy the schema it is checked against."""


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of ``path``; a syntax error names the file and line."""
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise K8sConfigError(f"{where}: {exc.problem}") from None
    result = [doc for doc in docs if doc is not None]
    for index, doc in enumerate(result):
        if not isinstance(doc, dict):
            raise K8sConfigError(f"{path}: document {index + 1} is a {type(doc).__name__}, not a mapping")
    return result


def load_yaml(path: Path) -> dict[str, Any]:
    """The single YAML mapping of ``path`` (dagster.yaml, Helm values)."""
    docs = load_yaml_documents(path)
    if len(docs) != 1:
        raise K8sConfigError(f"{path}: expected one YAML document, found {len(docs)}")
    return docs[0]


def run_launcher_config(instance: Mapping[str, Any], source: str = "dagster.yaml") -> dict[str, Any]:
    """The ``config`` of an instance's run_launcher section, which must be dagster_k8s' K8sRunLauncher."""
    section = instance.get("run_launcher")
    if not isinstance(section, Mapping):
        raise K8sConfigError(f"{source}: no run_launcher section")
    if (section.get("module"), section.get("class")) not in {
        ("dagster_k8s", "K8sRunLauncher"),
        ("dagster_k8s.launcher", "K8sRunLauncher"),
    }:
        raise K8sConfigError(f"{source}: run_launcher is {section.get('module')}.{section.get('class')}")
    return dict(section.get("config") or {})


def process_run_launcher_config(config: Mapping[str, Any], source: str = "run_launcher") -> dict[str, Any]:
    """Validate ``config`` against K8sRunLauncher's own schema; return it with dagster's defaults applied.

    This is the path Dagster takes when it builds the launcher from dagster.yaml (env-var sources are
    resolved, so the variables they name must be set).
    """
    result = process_config(K8sRunLauncher.config_type(), dict(config))
    if not result.success:
        problems = "; ".join(error.message for error in result.errors or [])
        raise K8sConfigError(f"{source}: invalid K8sRunLauncher config: {problems}")
    return dict(result.value or {})


_HELM_TO_LAUNCHER = {
    "loadInclusterConfig": "load_incluster_config",
    "kubeconfigFile": "kubeconfig_file",
    "jobNamespace": "job_namespace",
    "imagePullPolicy": "image_pull_policy",
    "envVars": "env_vars",
    "volumeMounts": "volume_mounts",
    "volumes": "volumes",
    "labels": "labels",
    "resources": "resources",
    "failPodOnRunFailure": "fail_pod_on_run_failure",
    "schedulerName": "scheduler_name",
    "securityContext": "security_context",
}
_HELM_RUN_K8S_CONFIG = {
    "containerConfig": "container_config",
    "podSpecConfig": "pod_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata",
    "jobSpecConfig": "job_spec_config",
    "jobMetadata": "job_metadata",
}


def helm_run_launcher_config(
    values: Mapping[str, Any], release_name: str = "dagster", release_namespace: str = "dagster"
) -> dict[str, Any]:
    """The run_launcher config the Dagster chart renders into its instance ConfigMap from ``values``.

    Mirrors the chart's ``dagsterYaml.runLauncher.k8s`` template (helm/dagster, 1.13): camelCase value
    keys become the launcher's snake_case fields, env sources become name lists, and the chart fills
    in the service account, DAGSTER_HOME, instance ConfigMap and Postgres secret itself. No helm
    binary is needed, so the Helm path can be checked with the same dagster-k8s code as dagster.yaml.
    """
    launcher = values.get("runLauncher") or {}
    if launcher.get("type") != "K8sRunLauncher":
        raise K8sConfigError(f"Helm values: runLauncher.type is {launcher.get('type')!r}, not K8sRunLauncher")
    k8s = (launcher.get("config") or {}).get("k8sRunLauncher") or {}
    unknown = set(k8s) - set(_HELM_TO_LAUNCHER) - {"envConfigMaps", "envSecrets", "runK8sConfig", "image"}
    if unknown:
        raise K8sConfigError(f"Helm values: unknown runLauncher.config.k8sRunLauncher keys {sorted(unknown)}")
    global_values = values.get("global") or {}
    service_account = global_values.get("serviceAccountName") or (values.get("serviceAccount") or {}).get(
        "name"
    )
    config: dict[str, Any] = {
        "job_namespace": k8s.get("jobNamespace") or release_namespace,
        "service_account_name": service_account,
        "dagster_home": global_values.get("dagsterHome", "/opt/dagster/dagster_home"),
        "instance_config_map": f"{release_name}-instance",
        "postgres_password_secret": global_values.get(
            "postgresqlSecretName", f"{release_name}-postgresql-secret"
        ),
    }
    for helm_key, launcher_key in _HELM_TO_LAUNCHER.items():
        value = k8s.get(helm_key)
        if value not in (None, [], {}, ""):
            config[launcher_key] = value
    for helm_key, launcher_key in (("envConfigMaps", "env_config_maps"), ("envSecrets", "env_secrets")):
        names = [source["name"] for source in k8s.get(helm_key) or [] if source.get("name")]
        if names:
            config[launcher_key] = names
    image = k8s.get("image")
    if image:
        config["job_image"] = (
            f"{image['repository']}:{image['tag']}" if image.get("tag") else image["repository"]
        )
    run_k8s = k8s.get("runK8sConfig") or {}
    unknown = set(run_k8s) - set(_HELM_RUN_K8S_CONFIG)
    if unknown:
        raise K8sConfigError(f"Helm values: unknown runK8sConfig keys {sorted(unknown)}")
    if run_k8s:
        config["run_k8s_config"] = {
            _HELM_RUN_K8S_CONFIG[key]: value for key, value in run_k8s.items() if value
        }
    return config


def manifest_model(doc: Mapping[str, Any], source: str = "manifest") -> Any:
    """Parse a manifest into its kubernetes client model, refusing unknown or misplaced fields."""
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    name = (doc.get("metadata") or {}).get("name", "?")
    if not api_version or not kind:
        raise K8sConfigError(f"{source}: a document without apiVersion/kind (name {name})")
    version = str(api_version).rsplit("/", 1)[-1]
    model_class = getattr(kubernetes.client, f"{version.capitalize()}{kind}", None)
    if model_class is None:
        raise K8sConfigError(f"{source}: no kubernetes client model for {api_version} {kind}")
    try:
        return k8s_model_from_dict(model_class, k8s_snake_case_dict(model_class, doc))
    except Exception as exc:  # the kubernetes models raise bare ValueError/Exception
        raise K8sConfigError(f"{source}: {kind} {name}: {exc}") from exc


def _selects(pod_selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    selector = pod_selector or {}
    if selector.get("matchExpressions"):
        raise K8sConfigError("matchExpressions in a policy podSelector are not evaluated here")
    return all(labels.get(key) == value for key, value in (selector.get("matchLabels") or {}).items())


def _peer_contains(peer: Mapping[str, Any], ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    block = peer.get("ipBlock")
    if not block:
        return False  # pod/namespace selectors never match an address outside the cluster
    if ip not in ipaddress.ip_network(block["cidr"]):
        return False
    return not any(ip in ipaddress.ip_network(cidr) for cidr in block.get("except") or [])


def _port_matches(rule_ports: Sequence[Mapping[str, Any]] | None, port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    for entry in rule_ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        first = entry.get("port")
        if first is None:
            return True
        if not isinstance(first, int):
            raise K8sConfigError(f"named port {first!r} cannot be evaluated for an external address")
        if first <= port <= entry.get("endPort", first):
            return True
    return False


def egress_allows(
    policies: Iterable[Mapping[str, Any]],
    namespace: str,
    ip: str,
    port: int,
    protocol: str = "TCP",
    pod_labels: Mapping[str, str] | None = None,
) -> bool:
    """Whether NetworkPolicy semantics let a pod of ``namespace`` open ``ip:port`` (an ipBlock peer).

    A pod no Egress policy selects may go anywhere; once one selects it, only the union of the
    selecting policies' egress rules is allowed.
    """
    address = ipaddress.ip_address(ip)
    labels = pod_labels or {}
    selecting = [
        policy
        for policy in policies
        if policy.get("kind") == "NetworkPolicy"
        and policy["metadata"].get("namespace") == namespace
        and "Egress" in (policy["spec"].get("policyTypes") or [])
        and _selects(policy["spec"].get("podSelector"), labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("egress") or []:
            peers = rule.get("to")
            if (not peers or any(_peer_contains(peer, address) for peer in peers)) and _port_matches(
                rule.get("ports"), port, protocol
            ):
                return True
    return False


def check_all(k8s_dir: Path = K8S_DIR) -> list[str]:
    """Check every file of ``k8s_dir``; return one line per checked object (raise on the first problem)."""
    lines = []
    instance = load_yaml(k8s_dir / INSTANCE_YAML.name)
    launcher = run_launcher_config(instance, str(k8s_dir / INSTANCE_YAML.name))
    # Schema check only: env-var sources stay unresolved, so no FARM_/DAGSTER_ variable is needed.
    result = validate_config(K8sRunLauncher.config_type(), launcher)
    if not result.success:
        raise K8sConfigError(f"{INSTANCE_YAML.name}: {'; '.join(e.message for e in result.errors or [])}")
    lines.append(f"{INSTANCE_YAML.name}: run_launcher valid for dagster-k8s K8sRunLauncher")
    helm = helm_run_launcher_config(load_yaml(k8s_dir / HELM_VALUES_YAML.name))
    result = validate_config(K8sRunLauncher.config_type(), helm)
    if not result.success:
        raise K8sConfigError(f"{HELM_VALUES_YAML.name}: {'; '.join(e.message for e in result.errors or [])}")
    lines.append(f"{HELM_VALUES_YAML.name}: runLauncher renders a valid K8sRunLauncher config")
    for name in MANIFEST_FILES:
        for doc in load_yaml_documents(k8s_dir / name):
            manifest_model(doc, name)
            lines.append(
                f"{name}: {doc['kind']} {doc['metadata'].get('namespace', '-')}/{doc['metadata']['name']}"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m farm_dagster.k8s_config [K8S_DIR]``: exit 1 with the problem when a file is wrong."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        for line in check_all(Path(args[0]) if args else K8S_DIR):
            print(f"ok  {line}")
    except (K8sConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
