"""Checks of docker-compose.yml and the Dockerfiles without a Docker engine (none runs here).

The compose file is read with PyYAML and the Dockerfiles with a small parser
(tests/deploy/dockerfile.py). Where a line of the build can run outside Docker it is run for
real: the requirements reader with the Dockerfiles' own arguments, the HEALTHCHECK command
against a live HTTP server, the entrypoint's pass-through. `docker compose config` runs too
when the compose plugin is installed.
"""

from __future__ import annotations

import http.server
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy.dockerfile import Dockerfile, Instruction, Stage, parse_dockerfile, read_dockerfile

from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
CPU_FILE = REPO / "docker" / "Dockerfile"
GPU_FILE = REPO / "docker" / "Dockerfile.gpu"
# Variables compose itself reads for substitution; the service never sees them.
COMPOSE_ONLY_VARS = {"BRIDGE_PUBLISH_PORT"}
SETTING_VARS = {f"BRIDGE_{name.upper()}" for name in Settings.model_fields}


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run this project's image (not Milvus's, nor the load balancer)."""
    return {
        name: service
        for name, service in compose["services"].items()
        if str(service.get("image", "")).startswith("modality-bridge:")
    }


@pytest.fixture(scope="module", params=["cpu", "gpu"])
def dockerfile(request: pytest.FixtureRequest) -> Dockerfile:
    return read_dockerfile(CPU_FILE if request.param == "cpu" else GPU_FILE)


def pyproject_pin(name: str, extra: str | None = None) -> str:
    """The pinned version of a dependency in pyproject.toml (of `extra`, if given)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["optional-dependencies"][extra] if extra else project["dependencies"]
    for dep in deps:
        match = re.fullmatch(rf"{re.escape(name)}==(\S+)", dep.strip())
        if match:
            return match.group(1)
    raise AssertionError(f"{name} is not pinned with == in pyproject.toml")


def arg_defaults(df: Dockerfile, stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for inst in [*df.global_args, *stage.of("ARG")]:
        name, _, default = inst.args.partition("=")
        if default:
            values[name.strip()] = default.strip()
    return values


def substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), text)


def shell_commands(inst: Instruction) -> list[list[str]]:
    """The simple commands of a shell-form RUN, split on && and ;."""
    commands: list[list[str]] = []
    current: list[str] = []
    lexer = shlex.shlex(inst.args, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    for token in lexer:
        if token in ("&&", ";", "||"):
            if current:
                commands.append(current)
            current = []
        else:
            current.append(token)
    if current:
        commands.append(current)
    return commands


def run_requirements_reader(command: list[str]) -> tuple[list[str], str]:
    """Run a Dockerfile's `python docker/requirements.py ... > FILE` here; (lines, FILE)."""
    assert ">" in command, f"requirements command must redirect to a file: {command}"
    redirect = command.index(">")
    argv, target = command[:redirect], command[redirect + 1]
    assert argv[:2] == ["python", "docker/requirements.py"], argv
    done = subprocess.run(
        [sys.executable, *argv[1:]], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split(), target


def pip_installs(df: Dockerfile, stage: Stage) -> list[dict[str, Any]]:
    """Every `pip install` of a stage: index URL, requirements (files resolved), flags."""
    values = arg_defaults(df, stage)
    files: dict[str, list[str]] = {}
    installs: list[dict[str, Any]] = []
    for inst in stage.of("RUN"):
        for command in shell_commands(inst):
            command = [substitute(t, values) for t in command]
            if "docker/requirements.py" in command:
                lines, target = run_requirements_reader(command)
                files[target] = lines
                continue
            if command[:2] != ["pip", "install"]:
                continue
            spec: dict[str, Any] = {"index": None, "reqs": [], "flags": set(), "line": inst.line}
            tokens = iter(command[2:])
            for token in tokens:
                if token in ("--index-url", "-i"):
                    spec["index"] = next(tokens)
                elif token == "-r":
                    name = next(tokens)
                    assert name in files, f"line {inst.line}: {name} was never written"
                    spec["reqs"].extend(files[name])
                elif token.startswith("-"):
                    spec["flags"].add(token)
                else:
                    spec["reqs"].append(token)
            installs.append(spec)
    return installs


def names(reqs: list[str]) -> set[str]:
    return {re.split(r"[=<>!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}


def python_c_code(tokens: list[str]) -> str:
    index = tokens.index("-c")
    return tokens[index + 1]


# Where libraries the images carry keep caches or scratch files when told; each one an image
# sets must lie in the data volume or a tmpfs (the root filesystem is read-only).
CACHE_VARS = {
    "HOME",
    "TMPDIR",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "HF_HOME",
    "HF_HUB_CACHE",
    "TRANSFORMERS_CACHE",
    "TORCH_HOME",
    "TORCHINDUCTOR_CACHE_DIR",
    "TRITON_CACHE_DIR",
    "CUDA_CACHE_PATH",
    "MPLCONFIGDIR",
    "NUMBA_CACHE_DIR",
}


def image_env(df: Dockerfile) -> dict[str, str]:
    """The runtime stage's ENV, `K=V` pairs (variables are not expanded)."""
    env: dict[str, str] = {}
    for inst in df.final.of("ENV"):
        for token in shlex.split(inst.args):
            key, sep, value = token.partition("=")
            assert sep, f"line {inst.line}: write ENV as KEY=VALUE, not {token!r}"
            env[key] = value
    return env


def image_user(df: Dockerfile) -> dict[str, str]:
    """The runtime user as the useradd/groupadd options create it: uid, gid, home."""
    found: dict[str, str] = {}
    for inst in df.final.of("RUN"):
        for command in shell_commands(inst):
            if command[0] in ("useradd", "groupadd"):
                options = dict(zip(command[1:], command[2:], strict=False))
                key = "uid" if command[0] == "useradd" else "gid"
                found[key] = options[f"--{key}"]
                if command[0] == "useradd":
                    found["home"] = options["--home-dir"]
    return found


def size_bytes(text: str) -> int:
    """A tmpfs size as docker reads it: 2g, 512m, 1048576."""
    match = re.fullmatch(r"(\d+)([kmg]?)", text.lower())
    assert match, f"tmpfs size {text!r}"
    return int(match.group(1)) * 1024 ** " kmg".index(match.group(2) or " ")


def is_under(path: str, roots: set[str]) -> bool:
    return any(Path(path) == Path(root) or Path(root) in Path(path).parents for root in roots)


class _Ready(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        code = self.status if self.path == "/readyz" else 404
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def readyz_server() -> Iterator[tuple[int, type[_Ready]]]:
    handler = type("Handler", (_Ready,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- the parser itself


def test_parser_reads_stages_continuations_and_comments() -> None:
    text = (
        "ARG BASE=python:3.11-slim\n"
        "FROM ${BASE} AS build\n"
        "# a comment\n"
        "RUN a \\\n"
        "  # comment inside a continuation\n"
        "  && b\n"
        "FROM ${BASE}\n"
        'COPY --from=build --chown=u:u /opt /opt\nCMD ["serve"]\n'
    )
    df = parse_dockerfile(text)
    assert [s.name for s in df.stages] == ["build", None]
    assert [a.args for a in df.global_args] == ["BASE=python:3.11-slim"]
    assert df.stages[0].of("RUN")[0].args == "a && b"
    copy = df.final.of("COPY")[0]
    assert copy.flags() == {"from": "build", "chown": "u:u"}
    assert copy.operands() == ["/opt", "/opt"]
    assert df.final.of("CMD")[0].exec_form() == ["serve"]
    with pytest.raises(ValueError, match="continuation"):
        parse_dockerfile("FROM x\nRUN a \\\n")
    with pytest.raises(ValueError, match="before the first FROM"):
        parse_dockerfile("RUN a\nFROM x\n")


# ---------------------------------------------------------------- compose


def test_services_and_profiles(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert set(services) == {"api", "api-gpu", "api-replica"}
    assert "profiles" not in services["api"], "the CPU service must start by default"
    assert services["api-gpu"]["profiles"] == ["gpu"]
    others = set(compose["services"]) - set(services)
    assert others == {"etcd", "minio", "milvus", "lb"}
    for name in others | {"api-replica"}:
        assert compose["services"][name]["profiles"] == ["scale"], name
    assert services["api"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert services["api-replica"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert services["api-gpu"]["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    for service in services.values():
        context = REPO / service["build"]["context"]
        assert (context / service["build"]["dockerfile"]).is_file()


def test_gpu_profile_requests_nvidia_devices(services: dict[str, dict[str, Any]]) -> None:
    devices = services["api-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert "deploy" not in services["api"], "the CPU service must not reserve GPUs"


def test_ports_match_the_service_port(services: dict[str, dict[str, Any]]) -> None:
    exposed = {read_dockerfile(f).final.of("EXPOSE")[0].args for f in (CPU_FILE, GPU_FILE)}
    for name, service in services.items():
        port = str(service["environment"]["BRIDGE_PORT"])
        assert exposed == {port}, f"{name}: EXPOSE {exposed} but BRIDGE_PORT={port}"
        assert service["environment"]["BRIDGE_HOST"] == "0.0.0.0"
        if name == "api-replica":
            assert "ports" not in service, "replicas are reached through the load balancer"
            continue
        container_ports = {str(p).rsplit(":", 1)[-1] for p in service["ports"]}
        assert container_ports == {port}, f"{name}: ports {service['ports']}"


def test_admin_key_is_required_with_a_message(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        value = service["environment"]["BRIDGE_ADMIN_KEY"]
        match = re.fullmatch(r"\$\{BRIDGE_ADMIN_KEY:\?(?P<msg>[^}]+)\}", value)
        assert match, f"{name}: BRIDGE_ADMIN_KEY must use ${{BRIDGE_ADMIN_KEY:?message}}"
        assert "BRIDGE_ADMIN_KEY" in match["msg"]


def test_every_variable_is_a_real_setting(services: dict[str, dict[str, Any]]) -> None:
    used = set()
    for service in services.values():
        used |= {k for k in service["environment"] if k.startswith("BRIDGE_")}
    example = (REPO / ".env.example").read_text()
    in_example = set(re.findall(r"^#?\s*(BRIDGE_[A-Z_]+)=", example, flags=re.M))
    assert "BRIDGE_ADMIN_KEY" in in_example
    unknown = (used | in_example) - SETTING_VARS - COMPOSE_ONLY_VARS
    assert not unknown, f"not fields of app.settings.Settings: {sorted(unknown)}"
    env_files = [e["path"] if isinstance(e, dict) else e for e in services["api"]["env_file"]]
    assert env_files == [".env"]


def test_volumes_for_data_and_models(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for name, service in services.items():
        df = read_dockerfile(GPU_FILE if name == "api-gpu" else CPU_FILE)
        workdir = df.final.of("WORKDIR")[-1].args
        declared = set(df.final.of("VOLUME")[0].exec_form() or [])
        mounts = {}
        for volume in service["volumes"]:
            source, target, *_ = volume.split(":")
            mounts[target] = source
        data_dir = service["environment"]["BRIDGE_DATA_DIR"]
        assert data_dir in mounts and mounts[data_dir] in compose["volumes"], mounts
        assert mounts[f"{workdir}/models"] == "./models"
        # Only the data is a VOLUME: a models VOLUME gave every plain `docker run` an
        # anonymous copy of the shipped models (compose bind-mounts ./models regardless).
        assert declared == {data_dir}, declared


def test_services_run_read_only_with_the_data_volume_the_only_writable_mount(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        df = read_dockerfile(GPU_FILE if name == "api-gpu" else CPU_FILE)
        data_dir = service["environment"]["BRIDGE_DATA_DIR"]
        assert service.get("read_only") is True, f"{name}: root filesystem must be read-only"
        assert str(service.get("user", "10001")).split(":")[0] not in ("0", "root"), name
        assert (
            service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"]
        ), name
        # writable: the data volume; read-only: everything else mounted
        writable = [v for v in service["volumes"] if not v.endswith(":ro")]
        assert [v.split(":")[1] for v in writable] == [data_dir], f"{name}: {writable}"
        # /tmp is a tmpfs that holds the largest upload the service spools there
        tmpfs = {
            t.split(":")[0]: dict(o.split("=") for o in t.split(":")[1].split(","))
            for t in service["tmpfs"]
        }
        assert set(tmpfs) == {"/tmp"}, f"{name}: {service['tmpfs']}"
        assert size_bytes(tmpfs["/tmp"]["size"]) > Settings().admin_body_limit
        # every cache and scratch path the image names lies in those two
        env = image_env(df)
        assert {"HF_HOME", "XDG_CACHE_HOME"} <= set(env)
        home = image_user(df)["home"]
        paths = {k: v for k, v in env.items() if k in CACHE_VARS} | {"home": home}
        outside = {k: v for k, v in paths.items() if not is_under(v, {data_dir, *tmpfs})}
        assert not outside, f"{name}: written at run time but on the read-only root: {outside}"
        assert env["BRIDGE_DATA_DIR"] == data_dir


def test_compose_healthcheck_probes_readyz(services: dict[str, dict[str, Any]]) -> None:
    for service in services.values():
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1] == "python" and "curl" not in test
        code = python_c_code(test)
        compile(code, "healthcheck", "exec")
        assert "/readyz" in code and str(service["environment"]["BRIDGE_PORT"]) in code


def test_scale_profile_replicas_share_milvus_and_one_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """The `scale` profile: replicas of the image on a Milvus server (the three services
    Milvus documents for standalone), one data volume of their own, nginx in front."""
    everything = compose["services"]
    replica = services["api-replica"]
    env = replica["environment"]
    assert env["BRIDGE_BACKEND"] == "milvus"
    assert env["BRIDGE_MILVUS_URI"] == "${BRIDGE_MILVUS_URI:-http://milvus:19530}"
    assert replica["deploy"]["replicas"] >= 2
    assert replica["depends_on"]["milvus"]["condition"] == "service_healthy"
    config = Settings(
        backend=env["BRIDGE_BACKEND"], milvus_uri="http://milvus:19530", workers=2
    ).service_config()
    assert config.shares_indexes  # the replicas' settings are valid replica settings
    data = {v.split(":")[0] for v in replica["volumes"] if v.split(":")[1] == "/data"}
    api_data = {v.split(":")[0] for v in services["api"]["volumes"] if ":/data" in v}
    assert data and data.isdisjoint(api_data), "the FAISS api locks its volume alone"
    milvus = everything["milvus"]
    assert milvus["environment"] == {"ETCD_ENDPOINTS": "etcd:2379", "MINIO_ADDRESS": "minio:9000"}
    assert set(milvus["depends_on"]) == {"etcd", "minio"}
    assert "9091/healthz" in " ".join(milvus["healthcheck"]["test"])
    # nginx: the published port reaches the replicas' service port
    lb = everything["lb"]
    assert lb["depends_on"]["api-replica"]["condition"] == "service_healthy"
    mount = next(v for v in lb["volumes"] if v.endswith(":/etc/nginx/nginx.conf:ro"))
    nginx = (REPO / mount.split(":")[0]).read_text()
    listen = re.search(r"^\s*listen (\d+);", nginx, flags=re.M)
    assert listen and lb["ports"] == [f"${{BRIDGE_PUBLISH_PORT:-8000}}:{listen.group(1)}"]
    upstream = re.search(r"^\s*server ([\w-]+):(\d+)", nginx, flags=re.M)
    assert upstream and upstream.groups() == ("api-replica", env["BRIDGE_PORT"])
    # bodies as large as the biggest upload the service takes (it answers 413 itself)
    body = re.search(r"client_max_body_size (\d+)m;", nginx)
    largest = Settings().max_admin_upload_bytes
    assert body and int(body.group(1)) * 1024 * 1024 > largest


@pytest.mark.skipif(shutil.which("docker") is None, reason="docker client not installed")
def test_docker_compose_config(tmp_path: Path) -> None:
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed (docker client only)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    argv = ["docker", "compose", "-f", str(COMPOSE), "--profile", "gpu", "--profile", "scale"]
    argv += ["config", "-q"]
    missing = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "set BRIDGE_ADMIN_KEY" in missing.stderr
    env["BRIDGE_ADMIN_KEY"] = "test-key"
    ok = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr


# ---------------------------------------------------------------- Dockerfiles


def test_multi_stage_with_non_root_runtime(dockerfile: Dockerfile) -> None:
    assert len(dockerfile.stages) >= 2
    builder = dockerfile.stage("builder")
    final = dockerfile.final
    assert any(c.flags().get("from") == builder.name for c in final.of("COPY"))
    users = final.of("USER")
    assert users, "the runtime stage must switch to a non-root USER"
    # Numeric uid:gid, so that a runtime can verify it is not root (runAsNonRoot), and the
    # ones useradd/groupadd create.
    uid, _, gid = users[-1].args.partition(":")
    created = image_user(dockerfile)
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0 and int(gid) != 0, users[-1].args
    assert (uid, gid) == (created["uid"], created["gid"])
    # The data directory (the volume's mount point) is created and owned by that user before
    # USER, so a fresh named volume starts writable by it.
    data_dir = image_env(dockerfile)["BRIDGE_DATA_DIR"]
    commands = [c for r in final.of("RUN") if r.line < users[-1].line for c in shell_commands(r)]
    made = [c for c in commands if c[:2] == ["mkdir", "-p"] and is_under(c[-1], {data_dir})]
    assert made, f"no `mkdir -p {data_dir}` before USER"
    chown = [c for c in commands if c[0] == "chown" and data_dir in c]
    assert chown and chown[-1][-2] == f"{uid}:{gid}" and "-R" in chown[-1], chown
    assert final.of("VOLUME")[0].exec_form() == [data_dir]
    # Nothing after USER may need root.
    after = final.instructions[final.instructions.index(users[-1]) + 1 :]
    assert not [i for i in after if i.keyword == "RUN"], "RUN after USER runs as the user"


def test_shipped_models_are_readable_by_the_runtime_user(dockerfile: Dockerfile) -> None:
    """The build context may hold model files only root can read (safetensors writes 0600):
    the runtime stage takes the models from a stage that opens their modes."""
    workdir = dockerfile.final.of("WORKDIR")[-1].args
    (copy,) = [
        c
        for c in dockerfile.final.of("COPY")
        if c.operands()[-1] in ("models", f"{workdir}/models")
    ]
    source = dockerfile.stage(copy.flags()["from"])
    src = copy.operands()[0]
    assert any(src in c.operands()[-1:] for c in source.of("COPY")), "models stage copies them"
    chmods = [c for r in source.of("RUN") for c in shell_commands(r) if c[0] == "chmod"]
    assert chmods and "-R" in chmods[-1] and "a+rX" in chmods[-1][-2] and chmods[-1][-1] == src


def test_dependencies_are_installed_before_the_source(dockerfile: Dockerfile) -> None:
    builder = dockerfile.stage("builder")
    steps = builder.instructions
    deps_run = next(
        i for i, s in enumerate(steps) if s.keyword == "RUN" and "pip install -r" in s.args
    )
    source_copy = next(
        i
        for i, s in enumerate(steps)
        if s.keyword == "COPY" and {"bridge", "app", "."} & set(s.operands()[:-1])
    )
    assert deps_run < source_copy
    before = [s for s in steps[:deps_run] if s.keyword == "COPY"]
    copied = {src for s in before for src in s.operands()[:-1]}
    assert copied <= {"pyproject.toml", "docker/requirements.py"}, copied
    project = [p for p in pip_installs(dockerfile, builder) if "." in p["reqs"]]
    assert len(project) == 1 and "--no-deps" in project[0]["flags"]
    assert project[0]["line"] > steps[source_copy].line


def test_project_install_sees_every_file_pyproject_names(dockerfile: Dockerfile) -> None:
    """readme and license-files are copied before `pip install .`: without LICENSE the build
    only warned (setuptools stops accepting a license-files pattern that matches nothing
    after 2027-02-18), and the image's package metadata had no license file."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needed = {project["readme"], *project["license-files"]}
    builder = dockerfile.stage("builder")
    install = next(p for p in pip_installs(dockerfile, builder) if "." in p["reqs"])
    copied = {
        src
        for copy in builder.of("COPY")
        if copy.line < install["line"] and "from" not in copy.flags()
        for src in copy.operands()[:-1]
    }
    assert needed <= copied, f"pyproject.toml names {sorted(needed - copied)}, never copied"


def test_cpu_image_installs_cpu_torch_and_faiss_cpu() -> None:
    df = read_dockerfile(CPU_FILE)
    installs = pip_installs(df, df.stage("builder"))
    torch = [p for p in installs if "torch" in names(p["reqs"])]
    assert len(torch) == 1
    assert torch[0]["index"] == "https://download.pytorch.org/whl/cpu"
    assert torch[0]["reqs"] == [f"torch=={pyproject_pin('torch')}"]
    everything = [r for p in installs for r in p["reqs"]]
    assert f"faiss-cpu=={pyproject_pin('faiss-cpu')}" in everything
    assert "faiss-gpu" not in names(everything)


def test_both_images_carry_the_milvus_client() -> None:
    """BRIDGE_BACKEND=milvus works in the images: the `milvus` extra is installed."""
    for path in (CPU_FILE, GPU_FILE):
        df = read_dockerfile(path)
        everything = [r for p in pip_installs(df, df.stage("builder")) for r in p["reqs"]]
        assert f"pymilvus=={pyproject_pin('pymilvus', 'milvus')}" in everything, path
        # and BRIDGE_DATABASE_URL (replicas on several machines): the `postgres` extra
        assert f"psycopg[binary]=={pyproject_pin('psycopg[binary]', 'postgres')}" in everything, (
            path
        )


def test_gpu_image_never_installs_faiss_cpu() -> None:
    df = read_dockerfile(GPU_FILE)
    for stage in df.stages:
        for spec in pip_installs(df, stage):
            assert "faiss-cpu" not in names(spec["reqs"]), f"line {spec['line']}: {spec}"
            if "." in spec["reqs"]:
                assert "--no-deps" in spec["flags"], "the project's own deps include faiss-cpu"
    builder = df.stage("builder")
    everything = [r for p in pip_installs(df, builder) for r in p["reqs"]]
    # faiss-gpu at the same version as the faiss-cpu pin, and torch at the torch pin.
    assert f"faiss-gpu=={pyproject_pin('faiss-cpu')}" in everything
    assert f"torch=={pyproject_pin('torch')}" in everything
    # The build itself asserts the absence, after the last install and in the runtime image.
    for stage in (builder, df.final):
        checks = [i.line for i in stage.of("RUN") if i.args.strip() == "! pip show faiss-cpu"]
        assert checks, f"stage {stage.name}: no `RUN ! pip show faiss-cpu`"
        last_install = max((p["line"] for p in pip_installs(df, stage)), default=0)
        assert max(checks) > last_install


def test_image_healthcheck_probes_readyz(
    dockerfile: Dockerfile, readyz_server: tuple[int, type[_Ready]]
) -> None:
    health = dockerfile.final.of("HEALTHCHECK")
    assert len(health) == 1
    options, _, command = health[0].args.partition("CMD ")
    assert "--start-period" in options and "curl" not in command
    port, handler = readyz_server
    env = {**os.environ, "BRIDGE_PORT": str(port)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    ok = subprocess.run(["sh", "-c", command], env=env, capture_output=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    handler.status = 503
    failing = subprocess.run(["sh", "-c", command], env=env, capture_output=True, timeout=30)
    assert failing.returncode == 1


def test_entrypoint(tmp_path: Path, dockerfile: Dockerfile) -> None:
    entry = dockerfile.final.of("ENTRYPOINT")[0].exec_form()
    assert entry == ["/usr/local/bin/entrypoint.sh"]
    assert dockerfile.final.of("CMD")[0].exec_form() == ["serve"]
    script = REPO / "docker" / "entrypoint.sh"
    assert subprocess.run(["sh", "-n", str(script)], timeout=10).returncode == 0
    env = {**os.environ, "BRIDGE_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        ["sh", str(script), "echo", "passed through"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout == "passed through\n"


def test_dockerignore_keeps_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".git", ".venv", "var"} <= set(patterns)
    for path in (CPU_FILE, GPU_FILE):
        for stage in read_dockerfile(path).stages:
            for copy in stage.of("COPY"):
                if "from" in copy.flags():
                    continue
                for source in copy.operands()[:-1]:
                    assert (REPO / source).exists(), f"{path.name}: COPY {source} is missing"
                    hit = [p for p in patterns if fnmatch(source, p) or source.startswith(p + "/")]
                    assert not hit, f"{path.name}: COPY {source} is excluded by {hit}"
