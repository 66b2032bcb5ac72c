"""The work-pool way: prefect.yaml's deployments registered with `vtr deploy` (which runs
`prefect deploy --all`) on a real Prefect server on loopback, a real `prefect worker start`
process worker, and `prefect deployment run` as a user types it; the docker variant is
deployed to a docker-type pool (the server checks its job variables) but never run."""
import inspect
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT, free_port, stop, vtr_cmd, vtr_env

PROCESS = ROOT / "prefect.yaml"
DOCKER = ROOT / "docker" / "prefect.yaml"
# the only steps the files may run: neither reaches beyond this machine
LOCAL_STEPS = {"prefect.deployments.steps.run_shell_script", "prefect.deployments.steps.set_working_directory"}


def _spec(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _deployments(path: Path, suffix: str) -> dict[tuple[str, str], dict]:
    """(entrypoint, name without the pool suffix) -> parameters."""
    out = {}
    for dep in _spec(path)["deployments"]:
        name = dep["name"].removesuffix(suffix).rstrip("-")
        out[dep["entrypoint"], name] = dep.get("parameters") or {}
    return out


def _prefect(args, env, timeout=300, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "prefect", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, cwd=cwd)


def _deploy(args, env, timeout=600):
    return subprocess.run(vtr_cmd("deploy", *args), env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, cwd=ROOT)


def _error_lines(r: subprocess.CompletedProcess) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.startswith("error:")]


def test_prefect_files_declare_every_flow_and_dataset_alike():
    import flows.extract
    from extractors.datasets.registry import DATASETS

    process, docker = _deployments(PROCESS, "process"), _deployments(DOCKER, "container")
    assert process == docker
    for (entrypoint, _), params in process.items():
        path, func = entrypoint.split(":")
        assert (ROOT / path).exists() and path == "flows/extract.py"
        flow = getattr(flows.extract, func)
        assert set(params) <= set(inspect.signature(flow.fn).parameters), entrypoint
    presets = {params["dataset"]: name for (_, name), params in process.items() if "dataset" in params}
    # extract-msrvtt covers MSR-VTT; every other registered dataset has its own deployment
    assert set(presets) == set(DATASETS) - {"msrvtt"} and all(presets[d] == d for d in presets)
    for path in (PROCESS, DOCKER):
        spec = _spec(path)
        steps = [name for key in ("build", "push", "pull") for step in spec.get(key) or [] for name in step]
        assert set(steps) <= LOCAL_STEPS, f"{path}: {steps}"
    # the process pool's flows run from the folder `prefect deploy` ran in
    build, = _spec(PROCESS)["build"]
    assert build["prefect.deployments.steps.run_shell_script"]["script"] == "pwd"
    # the docker pool's flows run from the image docker/Dockerfile builds
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    pull, = _spec(DOCKER)["pull"]
    assert pull["prefect.deployments.steps.set_working_directory"]["directory"] == \
        re.search(r"^WORKDIR (\S+)", dockerfile, re.M)[1]
    image = {d["work_pool"]["job_variables"]["image"] for d in _spec(DOCKER)["deployments"]}
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    assert image == {compose["services"]["worker"]["image"]} and f"-t {image.pop()} " in dockerfile


@pytest.mark.parametrize("case", ["no file", "no server set", "server down"])
def test_deploy_refuses_in_one_line_before_prefect_runs(case, tmp_path):
    env = {k: v for k, v in vtr_env(PREFECT_HOME=str(tmp_path / "home")).items() if k != "PREFECT_API_URL"}
    args, expected = [], ""
    if case == "no file":
        args, expected = ["--prefect-file", tmp_path / "prefect.yaml"], "prefect.yaml: No such file or directory"
    elif case == "no server set":
        expected = "PREFECT_API_URL is not set"
    else:
        url = env["PREFECT_API_URL"] = f"http://127.0.0.1:{free_port()}/api"
        expected = f"cannot reach the Prefect API at {url}"
    r = _deploy(args, env, timeout=120)
    assert r.returncode == 1 and len(_error_lines(r)) == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert expected in _error_lines(r)[0]
    assert "Deploying" not in r.stdout


def _read_deployment(url: str, name: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


@pytest.mark.slow
def test_deploy_to_a_process_pool_and_run_on_a_worker(prefect_server, tiny_data, tmp_path):
    from storage import DONE, FAILED, check_store, open_store

    env = vtr_env(PREFECT_API_URL=prefect_server, PREFECT_HOME=str(tmp_path / "home"))
    pool = f"vtr-test-{uuid.uuid4().hex[:8]}"
    # a pool that does not exist: one line, before Prefect loads a flow
    r = _deploy(["--pool", pool], env, timeout=120)
    assert r.returncode == 1 and _error_lines(r) == [
        f"error: work pool {pool!r} does not exist on {prefect_server}: create it with "
        f"prefect work-pool create {pool} --type process"], r.stdout[-2000:] + r.stderr[-2000:]
    assert "Deploying" not in r.stdout

    r = _prefect(["work-pool", "create", pool, "--type", "process"], env, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = _deploy(["--pool", pool], env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for d in _spec(PROCESS)["deployments"]:
        flow_name = d["entrypoint"].split(":")[1].replace("_", "-")
        assert _read_deployment(prefect_server, f"{flow_name}/{d['name']}").work_pool_name == pool
    dep = _read_deployment(prefect_server, "extract-msrvtt/process")
    assert dep.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
    assert _read_deployment(prefect_server, "extract-dataset/vatex-process").parameters == {"dataset": "vatex"}

    # the worker starts elsewhere: the pull step is what finds the flows
    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--limit", "1"],
                              env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              cwd=tmp_path)
    store = tmp_path / "pool.zarr"
    run = subprocess.Popen([sys.executable, "-m", "prefect", "deployment", "run", "extract-msrvtt/process",
                            "--param", f"data_root={tiny_data}", "--param", f"store={store}",
                            "--param", 'config={"random_init": true, "ast_size": "tiny", "crawl_retries": 0, '
                            '"workers": 1, "steps": ["probe", "frames", "text"]}', "--watch"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           stdin=subprocess.DEVNULL, cwd=tmp_path)
    try:
        # worker start-up (up to 180 s on a busy machine) and the run itself
        deadline = time.time() + 600
        while run.poll() is None:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            assert time.time() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(1)
        out = run.stdout.read()
        assert run.returncode == 0, out[-3000:] + (tmp_path / "worker.log").read_text()[-3000:]
        assert "Completed" in out
    finally:
        stop(run)
        worker.send_signal(signal.SIGINT)  # Ctrl-C: the worker's own shutdown (SIGTERM lingers)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
    ds = open_store(store)
    ids = list(ds.video.values)
    assert ds.frames_state.values[ids.index("video2")] == FAILED
    assert (ds.frames_state.values == DONE).sum() == len(ids) - 1
    assert (ds.text_state.values == DONE).all()
    assert check_store(store) == []


@pytest.mark.slow
def test_docker_prefect_file_deploys_to_a_docker_pool(prefect_server, tmp_path):
    env = vtr_env(PREFECT_API_URL=prefect_server, PREFECT_HOME=str(tmp_path / "home"))
    pool = f"vtr-test-docker-{uuid.uuid4().hex[:8]}"
    r = _prefect(["work-pool", "create", pool, "--type", "docker"], env, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    # the server validates the job variables (image, pull policy, volumes) against the pool's schema
    r = _deploy(["--prefect-file", DOCKER, "--pool", pool], env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    dep = _read_deployment(prefect_server, "extract-dataset/vatex-container")
    assert dep.work_pool_name == pool and dep.parameters == {"dataset": "vatex"}
    assert dep.job_variables["image"] == "vtr:0.1.0"
    assert dep.pull_steps == _spec(DOCKER)["pull"]
