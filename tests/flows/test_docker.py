"""Docker cannot run here: check what can be checked, that the images and compose file
agree with the project (same entry points, same pins, files that exist)."""
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def test_dockerfile_copies_what_exists_and_installs_the_pinned_project():
    text = (DOCKER / "Dockerfile").read_text()
    base = re.search(r"^FROM python:(\d+)\.(\d+)", text, re.M)
    assert base, "the worker image starts from an official Python image"
    req = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert (int(base[1]), int(base[2])) >= (3, 11) and "<3.13" in req and int(base[2]) < 13
    for src in re.findall(r"^COPY (\S+)", text, re.M):
        assert (ROOT / src).exists(), f"COPY {src}: no such path"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {p.rstrip("/").split("/")[-1] for p in re.findall(r"^COPY (\S+) \./", text, re.M)}
    assert packages <= copied, f"packages not copied into the image: {packages - copied}"
    assert "pip install ." in text and "pip check" in text  # pins come from pyproject.toml
    assert "DASK_DISTRIBUTED__WORKER__DAEMON=False" in text
    assert "ffmpeg" in text


def test_compose_services_use_real_entry_points():
    spec = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = spec["services"]
    assert {"postgres", "prefect-server", "worker"} <= set(services)
    assert "postgresql+asyncpg" in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert services["worker"]["environment"]["PREFECT_API_URL"].startswith("http://prefect-server:")
    build = services["prefect-server"]["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == (DOCKER / "Dockerfile").resolve()
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    for name, svc in services.items():
        cmd = svc.get("command")
        if not cmd or svc.get("image", "").startswith("postgres"):
            continue
        if cmd[:3] == ["python", "-m", "flows.serve"]:
            out = subprocess.run([sys.executable, "-m", "flows.serve", "--help"], capture_output=True, text=True)
            assert out.returncode == 0 and "--name" in out.stdout
        else:
            exe = shutil.which(cmd[0], path=str(Path(sys.executable).parent)) or shutil.which(cmd[0])
            assert exe, f"{name}: {cmd[0]} is not installed by the project"
            out = subprocess.run([exe, *cmd[1:2], "--help"], capture_output=True, text=True)
            assert out.returncode == 0, f"{name}: {' '.join(cmd[:2])} --help failed: {out.stderr[-500:]}"
    # the deployment name in the usage comment is the one the worker serves
    served = services["worker"]["command"][services["worker"]["command"].index("--name") + 1]
    assert f"extract-msrvtt/{served}" in (DOCKER / "compose.yaml").read_text()
