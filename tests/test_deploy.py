"""The Render blueprint and the lean deploy requirements agree with the code they deploy."""

import importlib.metadata
import os
import re
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from conftest import REPO, run_script, script_env


def web_service() -> dict:
    blueprint = yaml.safe_load((REPO / "render.yaml").read_text())
    (service,) = blueprint["services"]
    return service


def test_blueprint_is_one_free_python_web_service_starting_the_api():
    service = web_service()
    assert (service["type"], service["runtime"], service["plan"]) == ("web", "python", "free")
    assert service["startCommand"] == "uvicorn d4_api_mnist:app --host 0.0.0.0 --port $PORT"
    assert "requirements-render.txt" in service["buildCommand"]
    assert (
        "/whl/cpu" in service["buildCommand"]
    )  # CPU-only torch: the CUDA build does not fit 512 MB
    # The CPU-only torch it installs first obeys the same floor as requirements-render.txt (a safe weights loader).
    [torch] = [requirement for requirement in deploy_requirements() if requirement.name == "torch"]
    assert (
        SpecifierSet(re.search(r'"torch([^"]+)"', service["buildCommand"]).group(1))
        == torch.specifier
    )
    versions = {env["key"]: env["value"] for env in service["envVars"]}
    assert re.fullmatch(r"3\.\d+\.\d+", versions["PYTHON_VERSION"])


def test_health_check_path_answers_200(client):
    assert client.get(web_service()["healthCheckPath"]).status_code == 200


# Imports the API and runs its start-up and shut-down, as Render's `uvicorn d4_api_mnist:app` would.
START_AND_STOP = """
import asyncio
import d4_api_mnist

async def start_and_stop():
    async with d4_api_mnist.lifespan(d4_api_mnist.app):
        pass

asyncio.run(start_and_stop())
print("started and stopped")
"""


def deploy_requirements() -> list[Requirement]:
    lines = (REPO / "requirements-render.txt").read_text().splitlines()
    return [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]


def installed_closure(requirements: list[Requirement]) -> set[str]:
    """The distributions these requirements bring in, following each one's own requirements (extras included)."""
    provided: set[str] = set()
    waiting = [
        (canonicalize_name(requirement.name), requirement.extras) for requirement in requirements
    ]
    while waiting:
        name, extras = waiting.pop()
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in provided:
            continue
        provided |= {name, key}
        for line in importlib.metadata.requires(name) or []:
            dependency = Requirement(line)
            marker = dependency.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in extras | {""}):
                waiting.append((canonicalize_name(dependency.name), dependency.extras))
    return {name for name in provided if "[" not in name}


def only_these_distributions(names: set[str], folder: Path) -> Path:
    """A folder that holds, as links, the installed files of exactly these distributions: a site-packages for them."""
    for name in names:
        distribution = importlib.metadata.distribution(name)
        for top in {file.parts[0] for file in distribution.files or [] if file.parts[0] != ".."}:
            installed, link = Path(distribution.locate_file(top)), folder / top
            if installed.exists() and not link.exists():
                link.symlink_to(installed)
    return folder


def test_the_api_starts_with_only_what_the_deploy_requirements_install(tmp_path):
    site = only_these_distributions(installed_closure(deploy_requirements()), tmp_path)
    # -S: no site-packages; the path holds the repository and the deploy's distributions only, as on Render.
    render_env = {
        env["key"]: env["value"] for env in web_service()["envVars"]
    }  # as Render sets them
    env = script_env(**render_env, PYTHONPATH=f"{site}{os.pathsep}{REPO}")
    result = run_script("-S", "-c", START_AND_STOP, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "started and stopped"
    assert "Warning" not in result.stderr, (
        result.stderr
    )  # a Render user reads this log: nothing to alarm them


def test_the_deploy_requirements_stay_lean():
    deploy_packages = {canonicalize_name(requirement.name) for requirement in deploy_requirements()}
    assert deploy_packages == {
        "torch", "fastapi", "uvicorn", "h11", "pydantic", "anyio", "python-multipart", "pillow", "fastapi-offline",
    }  # fmt: skip
    assert not installed_closure(deploy_requirements()) & {
        "torchvision",
        "matplotlib",
        "requests",
        "tqdm",
    }
