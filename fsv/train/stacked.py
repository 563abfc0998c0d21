"""Several adaptations of one model trained as one batched model: a selection trial's jobs (one per
n, seed and task) start from the same weights, train the same number of steps at the same rate, and
differ only in their data and their own copy of the trainable weights. On a laptop-sized model a
step of one job is almost all fixed cost (an sft batch of the world is 8 sequences of 3 tokens:
world-l spends ~13 ms a step under DeepSpeed, a few of them in arithmetic), so A jobs stacked along a
leading axis (`torch.func.vmap` over `functional_call`, each job's weights a slice of one stacked
tensor) pay that cost once per step instead of A times.

Why by hand: no library trains independent copies of a model in one step (`torch.func.stack_module_state`
stacks weights for inference; ensembling libraries share one loss). What stays exact per job:
- its loss is its own mean over its batch, and the stack minimises their sum, so each slice's
  gradient is that job's gradient alone;
- AdamW is element-wise, so one optimizer over the stacked tensors is A optimizers;
- gradient clipping is per job (each slice's own norm, as DeepSpeed clips one job), not over the
  stack: DeepSpeed's own clipping is off for a stack and `clip_per_job` does it after `backward`;
- every job is evaluated and saved from its own slice, copied into its own model.
A stack runs under a DeepSpeed engine like a single job (ZeRO-0, fp32 weights: the stacked tensors
are ordinary parameters, gradients are averaged over ranks by DeepSpeed; `bf16-mixed` runs the
stack's forward under the engine's autocast as it runs a single job's), with the jobs' own loss
(`TrainJob.objective`, e.g. DPO's) where they share one; other stages, DeepSpeed's bf16 and mid-run
snapshots train one job at a time as before (`fsv.train.worker._train_one`).
Equal to one-at-a-time training to float rounding (tests/test_stacked.py); measured in
`benchmarks/stacked_step.py`.
"""

from __future__ import annotations

import copy
import time
from typing import Iterator

from fsv.train import resume
from fsv.train.precision import keeps_fp32_weights

# trainable floats held by one stack (each needs its weight, gradient and two Adam moments):
# 2^24 = 16.8M, 0.27 GB of fp32 state -- 15 world-l sft jobs, a whole sft trial on world-xs/s.
# Against 2^25, a world-l sft then instruction-tuning trial in one process peaks at 821 MB, not
# 1 189, and trains 5-7 % slower (`python benchmarks/trial_memory.py --stack-floats 25 24`).
STACK_FLOATS = 2**24


def stackable(job, config: dict) -> bool:
    train = config["train"]
    return (train.get("zero_stage") == 0 and keeps_fp32_weights(train.get("precision", "fp32")) and train.get("stack") != 1
            and not job.save_at and job.trainable is None)


def trainable_names(model) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


def stack_size(job, config: dict) -> int:
    """How many jobs like `job` one stack holds: `train.stack` if set, else what fits STACK_FLOATS."""
    if config["train"].get("stack"):
        return int(config["train"]["stack"])
    params = dict(job.model.named_parameters())
    floats = sum(params[name].numel() for name in trainable_names(job.model))
    return max(1, STACK_FLOATS // max(1, floats))


def _same_run(a, b) -> bool:
    run = lambda j: (j.steps, j.eval_at, j.lr_schedule, j.warmup, j.warmup_steps, j.cooldown, j.start)  # noqa: E731
    return run(a) == run(b) and a.objective is b.objective


def groups(jobs: Iterator, config: dict) -> Iterator[list]:
    """The jobs in order, in groups that train together: consecutive stackable jobs of the same run
    (steps, evaluations, schedule), up to `stack_size`; any other job alone. Lazy: at most one
    group's models are in memory at a time."""
    pending = next(jobs, None)
    while pending is not None:
        group, pending = [pending], None
        if stackable(group[0], config):
            limit = stack_size(group[0], config)
            while len(group) < limit:
                job = next(jobs, None)
                if job is None or not stackable(job, config) or not _same_run(group[0], job):
                    pending = job
                    break
                group.append(job)
        yield group
        if pending is None:
            pending = next(jobs, None)


def stacked_module(models: list, objective=None):
    """The module DeepSpeed wraps for a stack: one parameter per trainable weight of the model,
    stacked over the jobs; `forward` returns each job's loss (a tensor of A): the jobs' shared
    `objective(forward, batch)` (`TrainJob.objective`), or the model's own loss.

    A linear layer's stacked weight is held transposed (jobs x in x out, contiguous) and handed to
    the model as a transposed view: the batched matmuls then produce its gradient in that layout, so
    neither autograd nor the fused optimizer copies a transposed tensor each step (those copies were
    a third of a world-l step)."""
    import torch

    class Stacked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.names = trainable_names(models[0])
            template = copy.deepcopy(models[0])
            _eager_attention(template)  # SDPA has no vmap batching rule (it would loop over jobs)
            self.frozen = {n: p.detach() for n, p in template.named_parameters() if n not in self.names}
            self._template = [template]  # a list: not registered, its weights are not the stack's
            linear = {f"{m}.weight" for m, mod in template.named_modules() if isinstance(mod, torch.nn.Linear)}
            self.transposed = [n in linear for n in self.names]
            per_model = [dict(m.named_parameters()) for m in models]
            stacks = [torch.stack([p[n].detach() for p in per_model]) for n in self.names]
            self.weights = torch.nn.ParameterList(
                [torch.nn.Parameter((w.transpose(1, 2) if t else w).contiguous().clone())
                 for w, t in zip(stacks, self.transposed)])

        def stacked(self) -> list:
            """Each weight stacked as the model holds it (jobs x out x in for a linear layer)."""
            return [w.transpose(1, 2) if t else w for w, t in zip(self.weights, self.transposed)]

        def forward(self, **batch):
            from torch.func import functional_call, vmap

            template, frozen = self._template[0], self.frozen

            def one(weights, inputs):
                params = (dict(zip(self.names, weights)), frozen)
                forward = lambda **kw: functional_call(template, params, (), kw)  # noqa: E731
                return objective(forward, inputs) if objective else forward(**inputs).loss

            return vmap(one)(self.stacked(), batch)

        def write_back(self, index: int, model) -> None:
            """Copy job `index`'s slice into its own model (to evaluate or save it)."""
            params = dict(model.named_parameters())
            with torch.no_grad():
                for name, stacked in zip(self.names, self.stacked()):
                    params[name].copy_(stacked[index])

    return Stacked()


def _eager_attention(model) -> None:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner.set_attn_implementation("eager")


def stack_batches(batches: list[dict]) -> dict:
    """One step's batches of every job, stacked on a leading axis; text batches of different widths
    are right-padded (attention mask 0, labels -100), which leaves every real token's loss as it was.
    A tensor shaped otherwise than the token ids (a sequence's reference log-probability) is stacked
    as it is."""
    import torch

    width = max(b["input_ids"].shape[-1] for b in batches)
    out = {}
    for key in batches[0]:
        fill = -100 if key == "labels" else 0
        per_token = [b[key].shape == b["input_ids"].shape for b in batches]
        out[key] = torch.stack([torch.nn.functional.pad(b[key], (0, width - b[key].shape[-1]), value=fill) if tokens
                                else b[key] for b, tokens in zip(batches, per_token)])
    return out


def clip_per_job(weights, max_norm: float) -> None:
    """Each job's gradients scaled to norm <= max_norm (the rule of `torch.nn.utils.clip_grad_norm_`,
    as DeepSpeed applies it to one job), every slice by its own norm."""
    import torch

    grads = [w.grad for w in weights if w.grad is not None]
    if not max_norm or not grads:
        return
    norms = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads]), dim=0)  # one per job
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))


def train_stack(jobs: list, config: dict, rank: int, world_size: int, outs: list[str]) -> list[dict]:
    """Train `jobs` as one stack under one DeepSpeed engine; return per job what `_train_one` does
    (timings shared out evenly), each job's weights and curve saved under its own `outs` folder."""
    import deepspeed

    from fsv.models.load import partition_stats
    from fsv.train.worker import _optimizer, _peak_rss_mb, _save, _schedule, skip_lone_allreduce

    t_built = time.time()
    loaded = [{**partition_stats(job.model), "build_rss_mb": _peak_rss_mb()} for job in jobs]
    module = stacked_module([job.model for job in jobs], jobs[0].objective)
    optimizer = _optimizer(list(module.weights), config["train"], config["lr"])
    ds_config = {**config["deepspeed"], "gradient_clipping": 0.0}  # clipped per job, not over the stack
    engine, _, _, _ = deepspeed.initialize(
        model=module, optimizer=optimizer, lr_scheduler=_schedule(optimizer, jobs[0]), config=ds_config,
        dist_init_required=False)
    skip_lone_allreduce(engine, config, world_size)
    if jobs[0].resume:  # every job of a stack goes on from the same step (`_same_run`)
        resume_stack(optimizer, module, jobs)
    t_first = time.time()
    curves, tokens, evals = _run_stack(engine, module, jobs, config, rank)
    per_job_s = (time.time() - t_first - sum(r["eval_s"] for rows in evals for r in rows)) / len(jobs)
    done = []
    for i, (job, out) in enumerate(zip(jobs, outs)):
        module.write_back(i, job.model)
        if job.keep_state and rank == 0:
            resume.save(slice_state(optimizer, module, i, *job.so_far(curves[i], tokens[i])), job.keep_state)
        for row in evals[i]:
            row["tokens"] *= world_size
        _save(job.model, job, config, rank, out, {"loss": curves[i], "train_s": per_job_s,
                                                  "train_tokens": tokens[i] * world_size, **loaded[i]})
        done.append({"train_s": per_job_s, "engine_s": (t_first - t_built) / len(jobs),
                     "train_tokens": tokens[i] * world_size, "final_loss": curves[i][-1] if curves[i] else float("nan"),
                     "loaded": loaded[i], "device": str(engine.device), "evals": evals[i], "resumed": job.start > 0})
    return done


def _run_stack(engine, module, jobs: list, config: dict, rank: int):
    """The worker's step loop (`fsv.train.worker._run_steps`) for a stack: per job its loss curve,
    tokens and evaluation rows, each job evaluated from its own slice."""
    from fsv.train.steps import reporter
    from fsv.train.worker import _evaluate, _mean_over_ranks

    lead, tick, count = jobs[0], reporter(config, rank, jobs[0].steps), len(jobs)
    curves, tokens, evals = [[] for _ in jobs], [0] * count, [[] for _ in jobs]
    for step in range(lead.start + 1, lead.steps + 1):
        parts = [next(job.batches) for job in jobs]
        batch = {k: v.to(engine.device) for k, v in stack_batches(parts).items()}
        losses = engine(**batch)
        engine.backward(losses.sum())
        clip_per_job(module.weights, config["train"]["grad_clip"])
        engine.step()
        for i, (loss, part, job) in enumerate(zip(_mean_over_ranks(losses.detach(), each=True), parts, jobs)):
            curves[i].append(loss)
            tokens[i] += job.tokens_per_batch(part)
        if step in lead.eval_at:
            for i, job in enumerate(jobs):
                module.write_back(i, job.model)
                evals[i] += _evaluate(job.model, job, step, *job.so_far(curves[i], tokens[i]))
        tick(step)
    return curves, tokens, evals


def _model_layout(tensor, transposed: bool):
    return tensor.transpose(0, 1) if transposed else tensor


def slice_state(optimizer, module, index: int, curve: list[float], tokens: int) -> dict:
    """Job `index`'s state (`fsv.train.resume`): its slice of every stacked weight and of the
    optimizer's per-weight tensors, in the model's layout."""
    moments = []
    for weight, transposed in zip(module.weights, module.transposed):
        state = resume.per_weight(optimizer, weight)
        moments.append({k: _model_layout(v[index], transposed) if getattr(v, "shape", None) == weight.shape else v
                        for k, v in state.items()})
    weights = [stacked[index] for stacked in module.stacked()]
    return resume.job_state(module.names, weights, moments, curve, tokens)


def resume_stack(optimizer, module, jobs: list) -> None:
    """The optimizer's state of a stack whose jobs go on from saved states (their weights were
    loaded into their models before the stack was built): each job's tensors stacked, as its weights."""
    import torch

    for name, weight, transposed in zip(module.names, module.weights, module.transposed):
        per_job = [resume.optimizer_state(job.resume, name, weight) for job in jobs]
        state = {k: torch.stack([_model_layout(s[k], transposed) for s in per_job]).contiguous()
                 for k in per_job[0] if k != "step"}
        if "step" in per_job[0]:
            state["step"] = per_job[0]["step"]
        optimizer.state[weight] = state
