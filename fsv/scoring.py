"""Scoring: a label is chosen by the log-likelihood of each choice after the prompt.

`score_choices` is the fast path: prompts are batched (right-padded; positions are read at each
prompt's own last token), single-token choices are all scored from one forward pass, and multi-token
choices reuse the prompt's KV cache, so the shared prefix is computed once per prompt.
`score_naive` is the reference: one full-sequence forward per (prompt, choice).
Both return the summed log-probability of each choice's tokens and its length-normalised variant.
"""

from __future__ import annotations

import numpy as np
import torch


def _pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(p) for p in prompts])
    ids = torch.full((len(prompts), int(lengths.max())), pad_id, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = torch.as_tensor(p)
    mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()
    return ids, mask, lengths


@torch.no_grad()
def score_choices(model, prompts: list[list[int]], choices: list[list[int]], batch_size: int = 256, pad_id: int = 0):
    """Log-likelihood [len(prompts), len(choices)] of every choice after every prompt (summed over
    the choice's tokens), and the same divided by the choice's token count."""
    model.eval()
    device = next(model.parameters()).device
    single = all(len(c) == 1 for c in choices)
    out = np.zeros((len(prompts), len(choices)))
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        ids, mask, lengths = _pad(chunk, pad_id)
        ids, mask = ids.to(device), mask.to(device)
        if single:
            logits = model(input_ids=ids, attention_mask=mask).logits
            shift = logits.shape[1] - ids.shape[1]  # virtual tokens a prompt-tuned model prepends
            last = logits[torch.arange(len(chunk)), (lengths - 1 + shift).to(device)].float().log_softmax(-1)
            out[start : start + len(chunk)] = last[:, [c[0] for c in choices]].cpu().numpy()
        else:
            for i, prompt in enumerate(chunk):
                out[start + i] = _score_multi_token(model, prompt, choices, device)
    lengths = np.array([len(c) for c in choices], dtype=float)
    return out, out / lengths[None, :]


def _score_multi_token(model, prompt: list[int], choices: list[list[int]], device) -> np.ndarray:
    """One prompt, several multi-token choices: the prompt runs once, its KV cache serves every
    choice (choices batched, right-padded)."""
    prefix = torch.tensor([prompt], device=device)
    first = model(input_ids=prefix, use_cache=True)
    first_logp = first.logits[0, -1].float().log_softmax(-1)
    cache = first.past_key_values
    cache.batch_repeat_interleave(len(choices))
    width = max(len(c) for c in choices)
    cont = torch.zeros((len(choices), width), dtype=torch.long, device=device)
    for j, c in enumerate(choices):
        cont[j, : len(c)] = torch.as_tensor(c)
    attn = torch.ones((len(choices), len(prompt) + width), dtype=torch.long, device=device)
    for j, c in enumerate(choices):
        attn[j, len(prompt) + len(c) :] = 0
    logits = model(input_ids=cont, past_key_values=cache, attention_mask=attn, use_cache=False).logits
    logp = logits.float().log_softmax(-1)
    scores = np.zeros(len(choices))
    for j, c in enumerate(choices):
        total = first_logp[c[0]].item()
        total += sum(logp[j, t - 1, c[t]].item() for t in range(1, len(c)))
        scores[j] = total
    return scores


@torch.no_grad()
def score_naive(model, prompts: list[list[int]], choices: list[list[int]]):
    """Reference scoring: one unbatched full-sequence forward per (prompt, choice)."""
    model.eval()
    device = next(model.parameters()).device
    out = np.zeros((len(prompts), len(choices)))
    for i, prompt in enumerate(prompts):
        for j, choice in enumerate(choices):
            seq = torch.tensor([prompt + list(choice)], device=device)
            logp = model(input_ids=seq).logits[0].float().log_softmax(-1)
            out[i, j] = sum(logp[len(prompt) + t - 1, tok].item() for t, tok in enumerate(choice))
    lengths = np.array([len(c) for c in choices], dtype=float)
    return out, out / lengths[None, :]
