"""The `fsv` command: run, validate, status, models, analyze."""

from __future__ import annotations

import json
import sys

import click

from fsv.errors import FsvError


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FsvError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="fsv")
def main() -> None:
    """fsv: measure how in-context learning and fine-tuning relate as models grow."""


@main.command()
@click.argument("study_yaml", type=click.Path(dir_okay=False))
@click.option("--storage", default="results", show_default=True, help="folder, s3://… or gs://… for records")
@click.option("--address", default=None, help="an existing Ray cluster (default: RAY_ADDRESS, else a local one)")
@click.option("--verbose", is_flag=True, help="Ray's own progress tables and logs")
@click.option("--no-analyze", is_flag=True, help="skip the analysis at the end")
@click.option("--models", default=None, help="folder, s3://… or gs://… where ladder models are published for every "
              "node (default on a cluster or remote storage: STORAGE/_models)")
@click.option("--take-over", is_flag=True, help="take the study folder's lease from a run that is dead")
def run(study_yaml, storage, address, verbose, no_analyze, models, take_over):
    """Launch a study, or resume it: only cells without an `ok` record run."""
    from study.driver import run_study

    summary = run_study(study_yaml, storage, address, verbose, analyze=False if no_analyze else None, models=models,
                        take_over=take_over)
    sys.exit(0 if summary["ok"] == summary["total"] else 1)


@main.command()
@click.argument("study_yaml", type=click.Path(dir_okay=False))
def validate(study_yaml):
    """Check a study YAML and print its grid size, launching nothing."""
    from fsv.config import load_study
    from fsv.grid import expand

    study = load_study(study_yaml)
    cells = expand(study)
    by_regime: dict[str, int] = {}
    for c in cells:
        by_regime[c["regime"]] = by_regime.get(c["regime"], 0) + 1
    phases = {p: sum(c.get("phase") == p for c in cells) for p in ("select", "search")}
    search = (f"; training: {phases['select']} selection trials" if phases["select"] else "") + (
        f"; {phases['search']} adaptive searches of {study.search.samples} trials" if phases["search"] else "")
    click.echo(f"{study.name}: valid, {len(cells)} cells " + json.dumps(by_regime) + search)
    placed = {c["model"]: (c["train"]["zero_stage"], c["train"]["workers"]) for c in cells if c["train"]}
    for model, (stage, workers) in placed.items():
        click.echo(f"  {model}: ZeRO-{stage}, {workers} worker(s) per training trial")


@main.command()
@click.argument("study_dir")
@click.option("--hours", is_flag=True, help="also the trial-hours and GPU-hours the records account for")
def status(study_dir, hours):
    """Cells ok / failed / missing of a study folder; damaged files in records/ named (exit 2)."""
    from fsv.records import check_cells_json, scan_records
    from study.driver import count_cells

    frame, damaged = scan_records(study_dir)  # once: the cells.json check reads the study name from it
    listing = check_cells_json(study_dir, records=frame)
    if listing is None:
        raise FsvError(f"{study_dir}: no cells.json here; give DIR/STUDY_NAME of a study that `fsv run` started")
    s = count_cells(frame, listing["cells"])
    click.echo(f"{s['ok']} ok, {s['failed']} failed, {s['missing']} missing, {s['total']} cells")
    if damaged:
        from fsv.records import DamagedRecords

        raise DamagedRecords(damaged)
    if hours:
        from fsv.cost import study_hours

        h = study_hours(frame, listing.get("config"))
        click.echo(f"{h['trial_hours']:.4f} trial-hours, {h['gpu_hours']:.4f} GPU-hours held by trials "
                   "(x the price of a GPU-hour = the trials' cost; pretraining and idle nodes not included)")


@main.command()
@click.option("--world", "world_preset", default="quick", show_default=True, help="world preset")
@click.option("--study", "study_path", default=None,
              help="look ladder models up under this study's world and pretraining (e.g. study/quick.yaml)")
@click.option("--dump", is_flag=True, help="print the resolved ladder configs as JSON")
def models(world_preset, study_path, dump):
    """The model registry: parameter counts and whether each ladder model is cached."""
    from fsv.config import load_study
    from fsv.models.inventory import inventory

    study = load_study(study_path) if study_path else None
    rows = inventory(world_preset, study)
    if dump:
        click.echo(json.dumps(rows, indent=1))
        return
    under = f"study {study.name}" if study else f"world {world_preset}, default pretraining"
    click.echo(f"{'model':32} {'params':>12} {'pretrain lr':>11}  cached ({under})")
    for r in rows:
        params = f"{r['params']:,}" if r["params"] else "-"
        lr = f"{r['lr']:.2e}" if "lr" in r else "-"
        click.echo(f"{r['name']:32} {params:>12} {lr:>11}  {r['cached']}")


@main.command()
@click.argument("study_dir")
@click.option("--out", default=None, help="output folder (default: STUDY_DIR/analysis)")
@click.option("--allow-partial", is_flag=True, help="analyse what is there; the report says what is missing")
@click.option("--seed", default=0, show_default=True, help="bootstrap seed")
def analyze(study_dir, out, allow_partial, seed):
    """Fits, figures and report from a study's stored records."""
    from analysis import TrustError
    from analysis import analyze as run_analysis

    try:  # records read where they lie (s3:// / gs:// too), once; damaged files are refused by their path
        # there, and a cells.json of another study naming it (analysis.load.read_cells)
        where = run_analysis(study_dir, out=out, allow_partial=allow_partial, seed=seed)
    except TrustError as exc:
        raise FsvError(str(exc)) from None
    click.echo(f"analysis written to {where}")


if __name__ == "__main__":
    main()
