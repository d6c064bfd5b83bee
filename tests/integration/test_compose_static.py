"""docker-compose.yml and the two Dockerfiles, checked without a Docker engine: the services,
healthchecks, start order, volumes and ports are what the README promises, every COPY source
exists, every CMD starts a real package, and the client image never pulls torch."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"
DOCKERFILES = {"server": REPO_ROOT / "server/Dockerfile", "client": REPO_ROOT / "client/Dockerfile"}
SECRETS = ("SIQ_API_TOKEN", "SIQ_BUNDLE_HMAC_KEY")
RAY_NODES = ("ray-head", "ray-worker")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    joined, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        joined.append(current + line)
        current = ""
    out = []
    for line in joined:
        instruction, _, args = line.partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


def copy_sources(args: str) -> list[str]:
    parts = [p for p in shlex.split(args) if not p.startswith("--")]
    return parts[:-1]


def service_env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def test_services_and_images(compose: dict) -> None:
    assert set(compose["services"]) == {"server", "client", *RAY_NODES}
    for name, service in compose["services"].items():
        build = service["build"]
        dockerfile = DOCKERFILES["server" if name in RAY_NODES else name]
        assert (REPO_ROOT / build["context"] / build["dockerfile"]).resolve() == dockerfile


@pytest.mark.parametrize("name,path", [("server", "/healthz"), ("client", "/healthz")])
def test_healthchecks_use_python_urllib(compose: dict, name: str, path: str) -> None:
    check = compose["services"][name]["healthcheck"]
    test = check["test"]
    command = " ".join(test) if isinstance(test, list) else test
    if isinstance(test, list):
        assert test[0] in {"CMD", "CMD-SHELL"}
    assert "python" in command and "urllib" in command and "curl" not in command
    assert re.search(r"/(healthz|readyz)", command), command
    port = {"server": "8000", "client": "8001"}[name]
    assert f":{port}/" in command
    assert check.get("retries", 0) >= 1 and check.get("interval")


def test_client_waits_for_healthy_server(compose: dict) -> None:
    depends = compose["services"]["client"]["depends_on"]
    assert depends["server"]["condition"] == "service_healthy"


def test_server_state_on_named_volume_and_data_mounted(compose: dict) -> None:
    server = compose["services"]["server"]
    env = service_env(server)
    mounts = {}
    for volume in server["volumes"]:
        spec = re.sub(r":(ro|rw)$", "", volume)
        source, _, target = spec.rpartition(":")
        mounts[target] = source
    state_source = mounts[env["SIQ_STATE_DIR"]]
    assert state_source in (compose.get("volumes") or {}), "state must be a declared named volume"
    assert env["SIQ_DATA_DIR"] in mounts, "SIQ_DATA_DIR must be a mount"


def test_settings_are_interpolated_or_passed_through(compose: dict) -> None:
    text = COMPOSE.read_text()
    assert re.search(r"\$\{SIQ_BUNDLE:-latest:[a-z0-9]+\}", text), "SIQ_BUNDLE needs a default"
    server_env = _raw_env(compose["services"]["server"])
    client_env = _raw_env(compose["services"]["client"])
    for env in (server_env, client_env):
        for secret in SECRETS:
            assert secret in env, f"{secret} is not passed to the container"
            # Pass-through (no value) or a ${VAR:-x} with a non-empty x: never "" by default,
            # which the server refuses ("set but empty").
            value = env[secret]
            assert value is None or not re.search(r"\$\{" + secret + r":-\}", str(value)), value
    assert client_env["SIQ_SERVER_URL"] == "http://server:8000"


def _raw_env(service: dict) -> dict[str, object]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = {item.partition("=")[0]: item.partition("=")[2] or None for item in env}
    return dict(env)


def test_client_has_no_fixed_host_port(compose: dict) -> None:
    client = compose["services"]["client"]
    assert "container_name" not in client, "a fixed container name prevents scaling"
    for port in client.get("ports", []):
        if isinstance(port, dict):
            assert "published" not in port, port
        else:
            assert re.fullmatch(r"8001(/tcp)?", str(port)), f"fixed host port: {port}"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_copies_and_cmd(name: str) -> None:
    instructions = dockerfile_instructions(DOCKERFILES[name])
    assert instructions[0] == ("FROM", "python:3.11-slim")
    for instruction, args in instructions:
        if instruction in {"COPY", "ADD"}:
            for source in copy_sources(args):
                assert (REPO_ROOT / source).exists(), f"{name}/Dockerfile copies missing {source}"
    users = [args for instruction, args in instructions if instruction == "USER"]
    assert users and users[-1] not in {"root", "0"}, "the service must not run as root"
    cmd = json.loads([args for instruction, args in instructions if instruction == "CMD"][-1])
    assert cmd[:3] == ["python", "-m", name]
    assert (REPO_ROOT / cmd[2].replace(".", "/") / "__main__.py").is_file()
    port = {"server": "8000", "client": "8001"}[name]
    assert cmd[cmd.index("--port") + 1] == port and cmd[cmd.index("--host") + 1] == "0.0.0.0"


def test_client_image_never_pulls_torch() -> None:
    instructions = dockerfile_instructions(DOCKERFILES["client"])
    assert not any("torch" in args.lower() for _, args in instructions)
    copied = {s for i, a in instructions if i == "COPY" for s in copy_sources(a)}
    assert "server" not in copied, "the client image must not carry the server package"
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    client_deps = project["dependencies"] + project["optional-dependencies"]["client"]
    assert not [d for d in client_deps if re.match(r"torch", d, re.IGNORECASE)]
    assert any(d.startswith("torch==") for d in project["optional-dependencies"]["server"])


def test_dockerignore_keeps_context_small() -> None:
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv"} <= set(ignored)


def _compose_cli() -> list[str] | None:
    if shutil.which("docker"):
        ok = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if ok.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config_accepts_file(tmp_path: Path) -> None:
    """`docker compose config` validates without an engine; skipped where the CLI is absent."""
    cli = _compose_cli()
    if cli is None:
        pytest.skip("docker compose CLI not installed")
    done = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "--quiet"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def _container_env(service: dict, state_dir: Path) -> dict[str, str]:
    """The environment a container gets with nothing set in the host shell."""
    env = {}
    for key, value in _raw_env(service).items():
        if value is None:
            continue  # pass-through of an unset variable: unset in the container
        env[key] = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))
    env["SIQ_STATE_DIR"] = str(state_dir)  # the volume's path does not exist here
    return env


@pytest.mark.parametrize("name", ["server", "client"])
def test_compose_defaults_are_accepted_by_the_settings(
    compose: dict, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no secrets set on the host, each service's own settings class accepts the
    environment compose gives it (a blank token, say, would stop the server at start)."""
    for key in [k for k in os.environ if k.startswith("SIQ_")]:
        monkeypatch.delenv(key)
    for key, value in _container_env(compose["services"][name], tmp_path).items():
        monkeypatch.setenv(key, value)
    if name == "server":
        from server.service.settings import load_settings as load_server_settings

        server_settings = load_server_settings()
        assert server_settings.api_token is None and server_settings.bundle_hmac_key is None
    else:
        from client.settings import load_settings as load_client_settings

        client_settings, source = load_client_settings()
        assert source.kind == "latest" and client_settings.server_url == "http://server:8000"
        assert client_settings.inference_processes == 1  # the deployment recognises in a child


# ---------------------------------------------------------------- the `ray` profile


def _flag(command: list[str], name: str) -> str:
    values = [c.split("=", 1)[1] for c in command if c.startswith(f"--{name}=")]
    assert values, f"--{name}= missing from {command}"
    return values[0]


def test_ray_profile_is_opt_in(compose: dict) -> None:
    """`docker compose up` starts server + client only; `--profile ray` adds the cluster."""
    for name, service in compose["services"].items():
        assert service.get("profiles", []) == (["ray"] if name in RAY_NODES else []), name


def test_ray_head_serves_clients_and_the_dashboard(compose: dict) -> None:
    head = compose["services"]["ray-head"]
    command = head["command"]
    assert command[:3] == ["ray", "start", "--head"] and "--block" in command
    assert _flag(command, "ray-client-server-port") == "10001"
    assert _flag(command, "dashboard-host") == "0.0.0.0"
    dashboard = _flag(command, "dashboard-port")
    assert any(str(p).endswith(f":{dashboard}") for p in head["ports"]), head["ports"]
    assert head["healthcheck"]["test"][:3] == ["CMD", "ray", "health-check"]
    readme = (REPO_ROOT / "README.md").read_text()
    assert "--profile ray up" in readme and dashboard in readme, "README documents the profile"


def test_ray_workers_scale_join_the_head_and_see_the_data(compose: dict) -> None:
    worker = compose["services"]["ray-worker"]
    head_port = _flag(compose["services"]["ray-head"]["command"], "port")
    assert _flag(worker["command"], "address") == f"ray-head:{head_port}"
    assert "container_name" not in worker and not worker.get("ports"), "must scale"
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"
    env = service_env(worker)
    targets = {re.sub(r":(ro|rw)$", "", v).rpartition(":")[2] for v in worker["volumes"]}
    assert env["SIQ_DATA_DIR"] in targets, "workers read the data sets where they run"
    assert worker.get("shm_size"), "Ray's object store needs more than Docker's 64 MB /dev/shm"


def test_ray_nodes_and_server_agree_on_auth_and_extras(compose: dict) -> None:
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    pins = set()
    for name in ("server", *RAY_NODES):
        env = _raw_env(compose["services"][name])
        assert env["RAY_AUTH_TOKEN"] is None, "the token is passed through, never defaulted"
        assert env["RAY_AUTH_MODE"] == "${RAY_AUTH_MODE:-token}"
    for name in RAY_NODES:
        # the server's own build with SIQ_EXECUTOR=ray, so the two share every image layer
        assert compose["services"][name]["build"]["args"] == {"SIQ_EXECUTOR": "ray"}, name
    dockerfile = (REPO_ROOT / "server" / "Dockerfile").read_text()
    added = re.search(r'"\$SIQ_EXECUTOR" = ray \] && echo ,([\w,-]+)\)', dockerfile)
    assert added, "the Dockerfile adds extras for SIQ_EXECUTOR=ray"
    wanted = added.group(1).split(",")
    assert "ray-cluster" in wanted and set(wanted) <= set(extras), wanted
    pins |= {d for extra in wanted for d in extras[extra] if d.startswith("ray")}
    assert any("default" in pin for pin in pins), "the head serves the dashboard"
    pins |= set(extras["ray"])
    versions = {re.sub(r"^ray(\[[^\]]*\])?", "", pin) for pin in pins}
    assert len(versions) == 1 and next(iter(versions)).startswith("=="), pins
    server_env = service_env(compose["services"]["server"])
    assert server_env["SIQ_RAY_ADDRESS"] == "${SIQ_RAY_ADDRESS:-ray://ray-head:10001}"
    assert server_env["SIQ_EXECUTOR"] == "${SIQ_EXECUTOR:-local}"
    build_args = compose["services"]["server"]["build"]["args"]
    assert build_args["SIQ_EXECUTOR"] == "${SIQ_EXECUTOR:-local}", "ray in the image on demand"


def test_server_settings_accept_the_ray_profile(
    compose: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the server gets with SIQ_EXECUTOR=ray set on the host is a valid configuration."""
    for key in [k for k in os.environ if k.startswith("SIQ_")]:
        monkeypatch.delenv(key)
    for key, value in _container_env(compose["services"]["server"], tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SIQ_EXECUTOR", "ray")
    from server.service.settings import load_settings as load_server_settings

    settings = load_server_settings()
    assert settings.executor == "ray" and settings.ray_address == "ray://ray-head:10001"
