"""Documentation and deployment files agree with the code they describe.

docs/configuration.md documents every setting; docker-compose.yml, the Dockerfile, the
Makefile and the CI entry point are what the README promises, and hold no secrets.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from pacs.config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DOC = ROOT / "docs" / "configuration.md"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
MAKEFILE = ROOT / "Makefile"
CI_RUN = ROOT / ".ci" / "run"
README = ROOT / "README.md"
ENV_EXAMPLE = ROOT / ".env.example"
SHELL_SCRIPTS = [ROOT / "scripts" / "install_system_deps.sh", CI_RUN]

SETTING_NAMES = [f.name for f in dataclasses.fields(Settings)]
# Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}.
INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|ROOT_USER", re.IGNORECASE)


def env_name(setting: str) -> str:
    """The environment variable the settings loader reads for a field."""
    return ENV_PREFIX + setting.upper()


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def service_environment(service: str) -> dict[str, str]:
    environment = compose()["services"][service].get("environment", {})
    if isinstance(environment, list):  # the KEY=value list form
        environment = dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in environment.items()}


def strings(node: object) -> list[str]:
    """Every string value of a parsed YAML document (so not its comments)."""
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return [node] if isinstance(node, str) else []


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Resolve compose's ${...} forms the way `docker compose` does with these variables."""

    def resolve(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        present = variables.get(name)
        if op in (":-", ":?") and present == "":
            present = None
        if present is not None:
            return present
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            pytest.fail(f"compose needs {name} to be set: {arg}")
        return ""

    return INTERPOLATION.sub(resolve, value)


def make_dry_run(target: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", target],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- docs/configuration.md --------------------------------------------------------------------


@pytest.mark.parametrize("setting", SETTING_NAMES)
def test_every_setting_is_documented_by_its_environment_variable(setting):
    assert f"`{env_name(setting)}`" in CONFIG_DOC.read_text()


@pytest.mark.parametrize("setting", SETTING_NAMES)
def test_every_setting_is_documented_by_its_toml_key(setting):
    assert f"`{setting}`" in CONFIG_DOC.read_text()


def test_configuration_doc_example_toml_file_is_a_valid_configuration(tmp_path):
    blocks = re.findall(r"```toml\n(.*?)```", CONFIG_DOC.read_text(), re.DOTALL)
    assert blocks, "docs/configuration.md has no TOML example"
    for number, block in enumerate(blocks):
        path = tmp_path / f"example{number}.toml"
        path.write_text(block)
        assert set(tomllib.loads(block)) <= set(SETTING_NAMES)
        Settings.load(environ={env_name("s3_secret_key"): "example-secret"}, toml_path=path)


# -- docker-compose.yml -----------------------------------------------------------------------


def test_compose_file_defines_minio_postgres_and_pacs_services():
    assert {"minio", "postgres", "pacs"} <= set(compose()["services"])


def test_compose_pacs_environment_names_only_real_settings():
    readable = {env_name(name) for name in SETTING_NAMES} | {f"{ENV_PREFIX}CONFIG"}
    names = {key for key in service_environment("pacs") if key.startswith(ENV_PREFIX)}
    assert names, "the pacs service sets no PACS_* variable"
    assert names <= readable, f"not settings: {sorted(names - readable)}"


def test_compose_pacs_environment_is_a_valid_s3_and_postgresql_configuration():
    variables = {
        "MINIO_ROOT_USER": "archive",
        "MINIO_ROOT_PASSWORD": "not-a-real-password",
        "POSTGRES_PASSWORD": "not-a-real-password",
    }
    environ = {
        key: interpolate(value, variables) for key, value in service_environment("pacs").items()
    }
    settings = Settings.load(environ=environ)
    assert settings.object_store == "s3"
    assert settings.s3_endpoint == "minio:9000"
    assert settings.index_url.startswith("postgresql+psycopg://")
    assert "@postgres:" in settings.index_url


def test_compose_file_holds_no_literal_secrets():
    for service in compose()["services"]:
        for key, value in service_environment(service).items():
            if SECRET_NAME.search(key):
                assert INTERPOLATION.fullmatch(value), f"{service}: {key} is a literal value"
            credentials = re.search(r"://[^/@:]+:(?P<password>[^@]*)@", value)
            if credentials:
                assert INTERPOLATION.fullmatch(credentials["password"]), (
                    f"{service}: {key} has a literal password in its URL"
                )


def test_compose_pacs_waits_for_healthy_minio_and_postgres():
    depends_on = compose()["services"]["pacs"]["depends_on"]
    assert isinstance(depends_on, dict), "depends_on should wait for health, not only start"
    for dependency in ("minio", "postgres"):
        assert depends_on[dependency]["condition"] == "service_healthy"
        assert "healthcheck" in compose()["services"][dependency]


def test_compose_images_are_pinned_to_a_version():
    for service, spec in compose()["services"].items():
        if "image" in spec:
            assert is_pinned(spec["image"]), f"{service}: {spec['image']} is not pinned"


def test_env_example_lists_every_variable_compose_requires():
    required = {
        match["name"]
        for value in strings(compose())
        for match in INTERPOLATION.finditer(value)
        if match["op"] in (":?", "?")
    }
    listed = {
        line.split("=", 1)[0].strip()
        for line in ENV_EXAMPLE.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    assert required <= listed, f"missing from .env.example: {sorted(required - listed)}"


def test_env_example_marks_its_secret_values_as_placeholders():
    for line in ENV_EXAMPLE.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            name, value = (part.strip() for part in line.split("=", 1))
            if SECRET_NAME.search(name):
                assert "change-me" in value, f".env.example: {name} is not a placeholder"


# -- Dockerfile -------------------------------------------------------------------------------


def is_pinned(image: str) -> bool:
    """A digest, or a tag with a version number in it (not latest, not a bare name)."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and any(c.isdigit() for c in tag)


def test_dockerfile_base_image_is_pinned():
    images = re.findall(r"^FROM\s+(?:--\S+\s+)*(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert images, "the Dockerfile has no FROM line"
    for image in images:
        assert is_pinned(image), f"base image {image} is not pinned"


def test_dockerfile_runs_pacs_as_a_non_root_user():
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image runs as root"


# -- CI, make, scripts ------------------------------------------------------------------------


def test_ci_run_is_executable_and_runs_make_test():
    assert os.access(CI_RUN, os.X_OK)
    commands = [line.strip() for line in CI_RUN.read_text().splitlines()]
    assert "make test" in commands


def test_makefile_test_target_runs_pytest():
    assert "-m pytest" in make_dry_run("test")


def test_makefile_run_target_imports_the_samples_then_serves():
    commands = make_dry_run("run").splitlines()
    imports = [n for n, line in enumerate(commands) if line.endswith(" import sample_dicom")]
    serves = [n for n, line in enumerate(commands) if line.endswith(" serve")]
    assert imports and serves and imports[0] < serves[-1], commands


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda path: path.name)
def test_shell_script_has_valid_bash_syntax(script):
    result = subprocess.run(
        ["bash", "-n", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_readme_tells_how_to_run_and_test():
    readme = README.read_text()
    assert "make run" in readme
    assert "make test" in readme
