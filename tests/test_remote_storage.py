"""Remote storage for real: a study run by the `fsv` command with `--storage s3://…` against a local
S3-compatible server (moto's, over HTTP) on a real local Ray cluster. Records, Ray Train
checkpoints and W&B offline runs land in the bucket; a re-run resumes from there and runs exactly
the cells without an `ok` record; a bucket that does not exist is refused before launch."""

from __future__ import annotations

import json
import socket
import tempfile
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fixtures_hf import save_tiny_model, task_texts, write_formats
from fsv.errors import ConfigError
from fsv.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "fsv-test"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free local port, with one bucket; the environment that points AWS
    clients (pyarrow's, so fsv's and Ray's) at it."""
    from moto.server import ThreadedMotoServer
    from pyarrow import fs

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    fs.S3FileSystem(endpoint_override=endpoint, access_key="testing", secret_key="testing", region="us-east-1",
                    allow_bucket_creation=True).create_dir(BUCKET)
    yield env
    server.stop()


def _bucket(env):
    from pyarrow import fs

    return fs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], access_key="testing", secret_key="testing",
                           region="us-east-1")


def _names(env, path: str) -> list[str]:
    from pyarrow import fs

    return sorted(i.base_name for i in _bucket(env).get_file_info(fs.FileSelector(path, allow_not_found=True)))


def test_a_bucket_that_does_not_exist_is_refused_before_launch(s3, monkeypatch):
    from study.driver import check_storage

    for key, value in s3.items():
        monkeypatch.setenv(key, value)
    check_storage(f"s3://{BUCKET}/studies")
    with pytest.raises(ConfigError, match="bucket 'no-such-bucket' does not exist") as err:
        check_storage("s3://no-such-bucket/studies")
    assert err.value.field == "--storage" and err.value.value == "s3://no-such-bucket/studies"


def test_analysis_reads_s3_records_where_they_lie_and_its_output_goes_back(s3, monkeypatch, tmp_path):
    """No local copy of the records: the analysis of an s3:// study equals that of the same records
    in a local folder, and its report, tables and fits land beside the records on S3."""
    from analysis import AnalysisSettings, analyze
    from analysis.synthetic import SyntheticSpec, write_synthetic_study

    for key, value in s3.items():
        monkeypatch.setenv(key, value)
    spec = SyntheticSpec(models=("tiny", "small", "medium"), params=(50_000, 400_000, 3_200_000),
                         strengths=(0.04, 0.07, 0.12), ks=(0, 1, 4), ns=(4, 16, 64), seeds=(0, 1), tasks=("t",),
                         descriptions=False)
    study, local = f"s3://{BUCKET}/views/v", tmp_path / "v"
    for where in (study, local):
        write_synthetic_study(where, spec)
    settings = AnalysisSettings(bootstrap_resamples=30, figures=False)
    assert analyze(study, settings=settings) == f"{study}/analysis"
    analyze(local, settings=settings)
    assert {"fits.json", "report.md", "tables"} <= set(_names(s3, f"{BUCKET}/views/v/analysis"))
    bucket = _bucket(s3)
    remote_fits = json.loads(bucket.open_input_stream(f"{BUCKET}/views/v/analysis/fits.json").read())
    local_fits = json.loads((local / "analysis" / "fits.json").read_text())
    assert remote_fits["law"] == local_fits["law"] and remote_fits["records"] == local_fits["records"]
    assert not list(Path(tempfile.gettempdir()).glob("fsv-analysis-*"))  # the scratch output is gone


@pytest.mark.slow
def test_study_on_s3_leaves_its_records_there_and_resumes_from_them(s3, fsv_env, tmp_path):
    import datasets

    datasets.disable_progress_bars()
    model = save_tiny_model("gpt_neox", tmp_path / "neox", task_texts())
    study = {"name": "remote", "models": [str(model)], "tasks": ["sst2"], "max_eval": 8, "analyze": False,
             "task_sources": {"sst2": str(write_formats(get_task("sst2"), tmp_path / "data")["disk_dict"])},
             "wandb": {"mode": "offline"},
             "regimes": {"zero_shot": {"descriptions": ["none", "human"]}, "sft": {"n": [4], "steps": 2, "batch": 4}}}
    path = tmp_path / "remote.yaml"
    path.write_text(yaml.safe_dump(study))
    env = {**fsv_env, **s3, "WANDB_MODE": "offline"}
    storage, prefix = f"s3://{BUCKET}/studies", f"{BUCKET}/studies/remote"

    def fsv(*args):
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "fsv.cli", *args], capture_output=True, text=True,
                              timeout=900, cwd=tmp_path, env=env)
        print(f"fsv {args[0]}: {time.time() - t0:.0f} s")
        return proc.returncode, proc.stderr + proc.stdout

    rc, out = fsv("run", str(path), "--storage", storage)
    assert rc == 0, out[-3000:]
    records = _names(s3, f"{prefix}/records")  # 2 zero-shot trials, sft's selection trial and its scored cell
    assert len(records) == 4 and {"cells.json", "records", "train", "wandb"} <= set(_names(s3, prefix))
    assert len(_names(s3, f"{prefix}/wandb")) == 3  # one offline run per trial, uploaded
    assert not (tmp_path / "wandb").exists() and not (tmp_path / "s3:").exists()  # nothing written locally
    bucket = _bucket(s3)
    kept = {name: bucket.open_input_stream(f"{prefix}/records/{name}").read() for name in records}

    rc, out = fsv("run", str(path), "--storage", storage)
    assert rc == 0 and "4 already recorded ok, 0 to run" in out, out[-3000:]

    select = [n for n in records if b'"select"' in kept[n]]  # the selection trial: its scored cell is derived again
    assert len(select) == 1
    bucket.delete_file(f"{prefix}/records/{select[0]}")
    rc, out = fsv("run", str(path), "--storage", storage)
    assert rc == 0 and "3 already recorded ok, 1 to run" in out, out[-3000:]
    assert _names(s3, f"{prefix}/records") == records
    for name in set(records) - set(select):  # the others were not rewritten (the scored one: same content)
        assert bucket.open_input_stream(f"{prefix}/records/{name}").read() == kept[name]
    rc, out = fsv("status", f"{storage}/remote")
    assert rc == 0 and "4 ok, 0 failed, 0 missing, 4 cells" in out, out
