"""W&B: one run per trial, grouped by study; offline by default, under the study's folder. With
remote storage (`s3://`, `gs://`) an offline run is written to a local scratch folder and uploaded to
`STUDY/wandb/` when it finishes (`wandb sync` it from there after copying it down).

Online mode needs a key, which W&B reads from `WANDB_API_KEY` or its own login; fsv never reads,
prints, logs or records it. `FSV_WANDB_MODE` overrides the study's mode (e.g. `disabled` for a
benchmark)."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def run_name(cell: dict) -> str:
    parts = [cell["model"].split("/")[-1], cell["regime"], cell["task"]]
    parts += [f"{a}{cell[a]}" for a in ("k", "n") if cell.get(a)]
    parts += [f"d-{cell['description']}"]
    parts += [f"s{cell['seed']}"] if cell.get("seed") is not None else []
    parts += [f"{k}{v:g}" for k, v in sorted((cell.get("hparams") or {}).items())]  # a selection trial's configuration
    if cell.get("pretrain_seed") is not None:
        parts.append(f"ps{cell['pretrain_seed']}")
    if cell.get("checkpoint") is not None:
        parts.append(f"step{cell['checkpoint']}")
    return ".".join(str(p) for p in parts)


class Tracker:
    def __init__(self, section: dict, study_name: str, study_dir: str | Path):
        self.mode = os.environ.get("FSV_WANDB_MODE", section["mode"])
        self.project, self.entity = section["project"], section.get("entity")
        self.study_name = study_name
        self.remote = str(study_dir) if "://" in str(study_dir) else None
        self.dir = None if self.remote else Path(study_dir) / "wandb"  # remote: a scratch folder per run

    @contextmanager
    def run(self, name: str, run_id: str, config: dict, job_type: str):
        if self.mode == "disabled":
            yield None
            return
        import wandb

        local = self.dir or Path(tempfile.mkdtemp(prefix="fsv-wandb-"))
        local.mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=self.project, entity=self.entity, group=self.study_name, job_type=job_type,
            name=name, id=run_id, config=config, mode=self.mode, reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_meta=True),
            dir=str(local),
        )
        try:
            yield run
        finally:
            folder = Path(run.settings.sync_dir)
            run.finish()
            if self.remote:
                if self.mode == "offline":
                    self._upload(folder)
                shutil.rmtree(local, ignore_errors=True)

    def _upload(self, folder: Path) -> None:
        """An offline run's folder to `STUDY/wandb/<folder>` on the study's storage."""
        from pyarrow import fs

        remote, base = fs.FileSystem.from_uri(self.remote)
        fs.copy_files(str(folder), f"{base}/wandb/{folder.name}", source_filesystem=fs.LocalFileSystem(),
                      destination_filesystem=remote)

    def trial(self, cell: dict, attempt: int):
        return self.run(run_name(cell), f"{cell['cell_id']}-a{attempt}", cell, cell["regime"])

    def log_pretraining(self, name: str, seed: int, curve: list[float], summary: dict) -> None:
        with self.run(f"pretrain.{name}.ps{seed}", None, summary, "pretrain") as run:
            if run is None:
                return
            for step, loss in enumerate(curve, 1):
                run.log({"pretrain/loss": loss}, step=step)
            run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float))})
