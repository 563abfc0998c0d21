"""rlhf's DPO as training jobs of the shared loop (`fsv.train.worker`): a selection trial's policies
(one per n and seed) train together as one stack (`fsv.train.stacked`) instead of one trl
`DPOTrainer` each.

Why not trl's loop here: on laptop-sized models a `DPOTrainer` step is nearly all per-step work of
trl, transformers and accelerate (~20 ms a world-xs step for ~2 ms of the model's), and a stack
needs the loss as a function of a forward. What is trl's, kept as trl does it:
- the pairs (`rlhf.preference_data`) and their tokenisation: EOS appended to each completion, the
  completion starting where the tokenised prompt and prompt + completion diverge;
- the batch: every chosen sequence, then every rejected one, prompt + completion right-padded, the
  log-probability of a sequence the sum over its completion's tokens;
- the reference: the policy where it starts, its log-probabilities computed once before training;
- the loss, trl's default (`sigmoid`): -log sigmoid(beta ((log pi_c - log ref_c) - (log pi_r - log ref_r))),
  the mean over the batch's pairs; the reward margin the mean of beta (that chosen minus that rejected).
Equal to `DPOTrainer` to rounding on the same pairs (tests/test_dpo.py). What is fsv's: the order
of the pairs (each rank runs through them in its own shuffle, epoch after epoch, seeded by the
job; a batch is always `batch` pairs, so jobs of every n stack), and the rate schedule and weight
decay of every other regime (`TrainJob.warmup`'s ramp; decay on every weight). The reward margin
is measured on 64 held-out pairs after each training length.

Used where a stack can run (ZeRO-0, fp32 weights) for a policy starting from the base model; GRPO, the
instruction-tuned start and sharded or bf16 training keep trl's own loop (`rlhf.train_loop_per_worker`).
"""

from __future__ import annotations

import numpy as np

from fsv.train.precision import keeps_fp32_weights
from fsv.train.worker import TrainJob

HELD_OUT_PAIRS = 64  # the reward margin's pairs: fresh queries, another draw (as the trl path's eval set)


def uses_fsv_loop(cell: dict) -> bool:
    """Whether the cell's DPO trains here (see the module's docstring) rather than in trl's loop."""
    train = cell["train"]
    return (cell.get("method") == "dpo" and cell["settings"]["start"] == "base"
            and train.get("zero_stage") == 0 and keeps_fp32_weights(train.get("precision", "fp32")))


def tokenized_pairs(data, tokenizer) -> list[tuple[list[int], list[int], list[int]]]:
    """(prompt, chosen, rejected) token ids of each pair, as trl's DPOTrainer tokenises a plain-text
    pair."""
    from trl.data_utils import common_prefix_length

    eos = tokenizer.eos_token or ""
    pairs = []
    for pair in data:
        prompt = tokenizer(pair["prompt"]).input_ids
        chosen, rejected = (tokenizer(pair["prompt"] + (c if c.endswith(eos) else c + eos)).input_ids
                            for c in (pair["chosen"], pair["rejected"]))
        start = min(common_prefix_length(prompt, chosen), common_prefix_length(prompt, rejected))
        pairs.append((prompt[:start], chosen[start:], rejected[start:]))
    return pairs


def pair_batch(pairs: list, pad_id: int) -> dict:
    """The batch of `pairs`: chosen sequences then rejected ones, right-padded, with the mask of
    their completion tokens."""
    import torch

    seqs = [p + c for p, c, _ in pairs] + [p + r for p, _, r in pairs]
    completions = [[0] * len(p) + [1] * len(c) for p, c, _ in pairs] + [[0] * len(p) + [1] * len(r) for p, _, r in pairs]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention, completion = torch.zeros_like(ids), torch.zeros_like(ids)
    for i, (seq, mask) in enumerate(zip(seqs, completions)):
        ids[i, : len(seq)], attention[i, : len(seq)], completion[i, : len(seq)] = torch.tensor(seq), 1, torch.tensor(mask)
    return {"input_ids": ids, "attention_mask": attention, "completion_mask": completion}


def sequence_logps(forward, batch: dict):
    """Each sequence's log-probability of its completion tokens under `forward`'s model."""
    import torch

    logits = forward(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["input_ids"][:, 1:]
    per_token = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (per_token * batch["completion_mask"][:, 1:]).sum(dim=-1)


def dpo_objective(beta: float):
    """The step's loss (`TrainJob.objective`): trl's sigmoid DPO loss against the batch's reference."""
    import torch.nn.functional as F

    def loss(forward, batch):
        chosen, rejected = (sequence_logps(forward, batch) - batch["reference_logps"]).chunk(2)
        return -F.logsigmoid(beta * (chosen - rejected)).mean()

    return loss


def with_reference(model, batch: dict) -> dict:
    """`batch` with the log-probabilities of `model` as it is now (the policy where it starts)."""
    import torch

    with torch.no_grad():
        return {**batch, "reference_logps": sequence_logps(model, batch)}


def reward_margin(model, batch: dict, beta: float) -> float:
    """trl's `rewards/margins`: the mean over pairs of beta (chosen's log-ratio minus rejected's)."""
    import torch

    with torch.no_grad():
        chosen, rejected = (sequence_logps(model, batch) - batch["reference_logps"]).chunk(2)
    return float((beta * (chosen - rejected)).mean())


def pair_batches(pairs: list, size: int, pad_id: int, reference: dict, rng: np.random.Generator):
    """Endless batches of `size` pairs: the pairs in one shuffled order after another (an epoch at a
    time, as trl's sampler runs on one rank), each with its reference log-probabilities."""
    order: list[int] = []
    while True:
        while len(order) < size:
            order += rng.permutation(len(pairs)).tolist()
        chosen, order = order[:size], order[size:]
        batch = pair_batch([pairs[i] for i in chosen], pad_id)
        index = np.array(chosen + [i + len(pairs) for i in chosen])  # chosen rows, then rejected rows
        yield {**batch, "reference_logps": reference["reference_logps"][index]}


def build_job(config: dict, rank: int, world_size: int):
    """One DPO policy per (n, seed) of the trial, each evaluated on the held-out tasks (or the
    held-out text task) with each description and by its reward margin, at each length."""
    from fsv.models.load import load_for_training, load_tokenizer
    from fsv.regimes.rlhf import policy_measures, preference_data
    from fsv.regimes.training import adaptations, fresh_models, saver

    base = fresh_models(config, lambda: load_for_training(config)[0])
    tokenizer = load_tokenizer(config["model_path"], config.get("trust_remote_code", False))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    beta, per_rank = float(config["hparams"].get("beta", 0.1)), max(1, config["batch"] // world_size)
    objective, measures = dpo_objective(beta), policy_measures(config, tokenizer)

    def make_job(_, n, seed):
        model = base()
        data = preference_data(config, n, seed)
        pairs = tokenized_pairs(data, tokenizer)
        reference = with_reference(model, pair_batch(pairs, pad_id))
        held_out = with_reference(model, pair_batch(tokenized_pairs(
            preference_data(config, HELD_OUT_PAIRS, seed + 10_000), tokenizer), pad_id))
        rng = np.random.default_rng([seed, rank, 14])
        return TrainJob(model=model, batches=pair_batches(pairs, per_rank, pad_id, reference, rng), steps=0,
                        save=saver(tokenizer), objective=objective, tokens_per_batch=lambda b: int(b["attention_mask"].sum()),
                        evaluate=lambda m: [{**row, "reward_margin": reward_margin(m, held_out, beta)} for row in measures(m)],
                        tags={"n_distinct": len(set(data["prompt"]))})

    return adaptations(config, ["heldout"], make_job, None)  # each policy's measures are its own (its held-out pairs)
