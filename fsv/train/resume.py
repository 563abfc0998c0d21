"""A training job's state at the end of its run, kept so a longer run of the same job can go on from
it instead of training its first steps again.

A grid whose choice sits at the longest length its run trained runs that configuration again, twice
as long (`fsv.search.select.longer_runs`). The rate is constant after a warm-up fixed in steps
(`TrainJob.warmup_steps`), and a job's batches are a seeded stream, so the longer run's first L
steps are the shorter run's: it loads the job's weights and optimizer moments after step L, draws
and discards its first L batches, and trains steps L+1 .. 2L only. What it continues is equal to a
run of 2L steps from the start, to float rounding (tests/test_resume.py).

What one job's state holds (`<state dir>/<job name>.pt`, written by rank 0, read by every rank): its
trainable weights and every per-weight tensor of the optimizer's state (AdamW's two moments, SGD's
momentum), each in the model's own layout and by parameter name; the optimizer's step count; the
loss curve and the tokens trained so far (a row's `train_loss` reads the last tenth of the whole
curve, its `tokens` the whole run's). A state folder lives in the study's storage (a folder, `s3://`
or `gs://`) beside the records, so a worker on any node reads it. Right after its trial, the states
of the n levels whose longest length was not their own best on any validation set are removed
(`keep_levels`, `fsv.search.select.may_go_on`: no longer run can start from them); the rest once
their training group is measured (study/selection.py).

Why by hand: DeepSpeed's `save_checkpoint` keeps one engine's state, but a stack (`fsv.train.stacked`)
holds many jobs in one engine, and a longer run trains only some of them (the n levels whose choice
sat at the end), in a stack of a different size; so each job's slice is saved on its own.
Only what can go on exactly is saved: ZeRO-0 with fp32 weights (`resumable`). A job whose state is
missing or unreadable trains from step 0 instead (the same run, at its full cost), and says so.
"""

from __future__ import annotations

import io
import sys

STATE = ".pt"


def resumable(job, config: dict) -> bool:
    """Whether the job's full state is in one place in this process: every rank holds all of it
    (ZeRO-0), in fp32, and its trainable weights are the ones requiring grad."""
    from fsv.train.precision import keeps_fp32_weights

    train = config["train"]
    return train.get("zero_stage") == 0 and keeps_fp32_weights(train.get("precision", "fp32")) and job.trainable is None


def state_file(state_dir: str, job_name: str) -> str:
    return f"{state_dir.rstrip('/')}/{job_name}{STATE}"


def per_weight(optimizer, param) -> dict:
    """The optimizer's state of one weight: tensors shaped like it (moments) and the rest (step)."""
    return dict(optimizer.state.get(param, {}))


def job_state(names: list[str], weights: list, moments: list[dict], curve: list[float], tokens: int) -> dict:
    """One job's state: `weights[i]` and `moments[i]` (its optimizer state) belong to `names[i]`, in
    the model's layout. The step count is the optimizer's (one number for every weight)."""
    step = next((float(m["step"]) for m in moments if "step" in m), float(len(curve)))
    params = {}
    for name, weight, state in zip(names, weights, moments):
        params[name] = {"weight": weight.detach().clone(),
                        **{k: v.detach().clone() for k, v in state.items() if k != "step" and hasattr(v, "shape")}}
    return {"step": step, "steps": len(curve), "curve": list(curve), "tokens": int(tokens), "params": params}


def save(state: dict, path: str) -> None:
    """Write one job's state to a local path or URI, whole: a reader never sees half of it."""
    import torch

    from fsv.records import _fs

    filesystem, target = _fs(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    filesystem.create_dir(target.rsplit("/", 1)[0], recursive=True)
    partial = f"{target}.partial"
    with filesystem.open_output_stream(partial) as out:
        out.write(buffer.getvalue())
    filesystem.move(partial, target)


def load(path: str, names: list[str], shapes: dict) -> dict | None:
    """One job's state, or None where there is none or it does not fit the job (a missing, damaged
    or foreign file: named on stderr, and the job trains from step 0)."""
    import torch

    from fsv.records import _fs

    filesystem, target = _fs(path)
    try:
        with filesystem.open_input_file(target) as f:
            state = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        print(f"fsv: no saved state at {path}: this job trains from step 0", file=sys.stderr)
        return None
    except Exception as exc:  # noqa: BLE001 - a damaged file is named, and the run goes on without it
        print(f"fsv: the saved state {path} is unreadable ({type(exc).__name__}: {exc}); this job trains from step 0",
              file=sys.stderr)
        return None
    params = state.get("params", {}) if isinstance(state, dict) else {}
    if sorted(params) != sorted(names) or any(tuple(params[n]["weight"].shape) != shapes[n] for n in names):
        print(f"fsv: the saved state {path} is not this job's (other weights or shapes); this job trains from step 0",
              file=sys.stderr)
        return None
    return state


def load_weights(model, state: dict) -> None:
    """The job's trainable weights as they were after its saved step."""
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, saved in state["params"].items():
            params[name].copy_(saved["weight"])


def optimizer_state(state: dict, name: str, like) -> dict:
    """One weight's optimizer state from a saved job's, as the optimizer holds it: the per-weight
    tensors and a step count shaped and placed as torch's AdamW keeps it (a float32 scalar)."""
    import torch

    out = {k: v.to(like.device) for k, v in state["params"][name].items() if k != "weight"}
    if out:
        out["step"] = torch.tensor(state["step"], dtype=torch.float32, device=like.device)
    return out


def go_on(job, config: dict) -> dict | None:
    """A job of a longer run, set to go on from the shorter run's saved state (`config["state_in"]`,
    after `config["resume_at"]` steps): its weights loaded and its first batches drawn. Returns the
    state (`TrainJob.resume`), or None where the job must train from step 0 (not resumable here, or
    no usable state), which gives the same run at its full cost."""
    from fsv.train.stacked import trainable_names

    if not resumable(job, config):
        return None
    names = trainable_names(job.model)
    shapes = {name: tuple(p.shape) for name, p in job.model.named_parameters() if name in names}
    path = state_file(config["state_in"], job.name)
    state = load(path, names, shapes)
    if state is None:
        return None
    if state["steps"] != config["resume_at"]:
        print(f"fsv: the saved state {path} is after {state['steps']} steps, not {config['resume_at']}; "
              "this job trains from step 0", file=sys.stderr)
        return None
    load_weights(job.model, state)
    for _ in range(state["steps"]):  # the stream of batches as the shorter run left it
        next(job.batches)
    return state


def keep_levels(state_dir: str, levels: set[int]) -> int:
    """Remove the saved states of the jobs outside `levels` (job names start `n<level>-`): a level
    that cannot be run longer need not hold its disk until its group is measured. Returns how many
    were removed."""
    from pyarrow.fs import FileSelector, FileType

    from fsv.records import _fs

    filesystem, base = _fs(state_dir)
    if filesystem.get_file_info(base).type != FileType.Directory:
        return 0
    removed = 0
    for info in filesystem.get_file_info(FileSelector(base)):
        level = info.base_name.split("-", 1)[0]
        if info.base_name.endswith(STATE) and level[1:].isdigit() and int(level[1:]) not in levels:
            filesystem.delete_file(info.path)
            removed += 1
    return removed
