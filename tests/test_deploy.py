"""The Render blueprint and the lean deploy requirements agree with the code they deploy."""

import re

import yaml

from conftest import REPO, run_script


def web_service() -> dict:
    blueprint = yaml.safe_load((REPO / "render.yaml").read_text())
    (service,) = blueprint["services"]
    return service


def test_blueprint_is_one_free_python_web_service_starting_the_api():
    service = web_service()
    assert (service["type"], service["runtime"], service["plan"]) == ("web", "python", "free")
    assert service["startCommand"] == "uvicorn d4_api_mnist:app --host 0.0.0.0 --port $PORT"
    assert "requirements-render.txt" in service["buildCommand"]
    assert "/whl/cpu" in service["buildCommand"]  # CPU-only torch: the CUDA build does not fit 512 MB
    versions = {env["key"]: env["value"] for env in service["envVars"]}
    assert re.fullmatch(r"3\.\d+\.\d+", versions["PYTHON_VERSION"])


def test_health_check_path_answers_200(client):
    assert client.get(web_service()["healthCheckPath"]).status_code == 200


def test_api_imports_nothing_beyond_the_deploy_requirements():
    check = (
        "import sys, d4_api_mnist; "
        "print(sorted(m for m in ('torchvision', 'matplotlib', 'requests') if m in sys.modules))"
    )
    result = run_script("-c", check)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    lines = (REPO / "requirements-render.txt").read_text().splitlines()
    deploy_packages = {re.split(r"[<>=\[ ]", line)[0] for line in lines if line and not line.startswith("#")}
    assert deploy_packages == {"torch", "fastapi", "uvicorn", "pydantic", "anyio", "python-multipart", "pillow"}
