"""Scoring: a label is chosen by the log-likelihood of each choice after the prompt.

In an episode the description and the k demonstrations are the same for every query, so the
scorer computes their keys and values once and every query pays only for its own tokens:

1. `shared_prefixes` splits the prompts into runs that share a prefix (found on the token ids, so a
   tokenizer's merges across the boundary cannot make it inexact): an episode's queries form a run;
   at k = 0 the queries of a description share it, and prompts that share only <bos> run in full.
2. `score_episodes` runs the prefixes of a block of episodes in one forward (right-padded) and
   keeps their `DynamicCache`. An episode's queries then sit side by side in rows after their
   prefix's cache rows (gathered with `index_select`), each query followed by every choice's
   tokens but its last: an additive 4D attention mask lets a token see its prefix, its own
   query's suffix and its own choice's earlier tokens, and position ids restart after the prefix
   for each query. One forward scores single- and multi-token choices alike, and the prefix's
   keys are copied once a row, not once a query and choice (copying them per query cost more
   than the queries' compute on CPU). A row holds about the prefix's width of tokens, so the
   masked keys a query skips stay below what it reads.
3. A prompt-tuned peft model (PromptTuning / P-tuning: m virtual tokens before the prompt) is
   served by the same path: the soft prompt's embeddings go before every prefix, so the cache
   holds m + prefix positions. Other prompt-learning methods (prefix tuning, which injects its own
   cache), sliding-window attention and flash-attention (no 4D masks) fall back to
   `score_full_prompts`, the previous path
   (full prompts batched, multi-token choices from each prompt's own cache -- or, for prompt
   learning, as full sequences: peft puts its virtual tokens before every forward, so the
   previous path read a prompt-tuned model's later choice tokens after a second soft prompt).

Measured (`benchmarks/scorer.py`, one process, 1 thread, identical requests, the same
log-likelihoods, a 2-core machine under heavy load): world-l with 4 choices, 10x
lm-evaluation-harness's in-process `HFLM.loglikelihood` at k = 16 (it runs one forward per
context, all k demonstrations again for every query), 9x at k = 4, 7x at k = 8, 2.4x at k = 0;
12x on a text task with multi-token label words; 5-10x the previous path at k >= 4.

Batches are sized in tokens (`Budget`: new tokens a forward runs, keys its rows read), smaller on
CPU: on 2 cores a batch of 256 full prompts cost ~26 % more than one of 16 (cache misses), while a
GPU wants wide batches. `score_naive` is the reference: one full-sequence forward per (prompt, choice).
Every scorer returns the summed log-probability of each choice's tokens and its length-normalised
variant, [n prompts, n choices].
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache


@dataclass(frozen=True)
class Budget:
    """What one forward may hold: `new` tokens run through the model (activations, logits) and
    `cached` keys read (rows x cached positions: the KV cache a batch copies)."""

    new: int
    cached: int

    @classmethod
    def for_device(cls, device) -> Budget:
        """On CPU (1 thread, a busy 2-core machine, best of 3, `benchmarks/scorer.py`'s cases):
        the text task took 0.91 s at 4096 new / 128k cached and at 2048 / 32k, 1.0-1.1 s at 1024
        and 1.1-1.2 s at 512; world-l at k = 16 0.22 s at 4096 / 32k, 0.25-0.37 s at the others.
        A GPU wants wider batches, bounded by the logits read (rows x tokens x vocabulary)."""
        if torch.device(device).type == "cuda":
            return cls(new=4096, cached=1 << 20)  # not measured here (no GPU on the 2-core machine)
        return cls(new=4096, cached=1 << 16)


def _pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids [n, longest], attention mask, lengths."""
    lengths = np.array([len(p) for p in prompts], dtype=np.int64)
    ids = np.full((len(prompts), int(lengths.max(initial=0))), pad_id, dtype=np.int64)
    mask = np.arange(ids.shape[1])[None, :] < lengths[:, None]
    ids[mask] = np.fromiter((t for p in prompts for t in p), dtype=np.int64, count=int(lengths.sum()))
    return torch.from_numpy(ids), torch.from_numpy(mask.astype(np.int64)), torch.from_numpy(lengths)


def _cache_kw(model) -> str:
    """The forward's name for the KV cache: `cache` since transformers 5.24 (`past_key_values`
    before, and in models that ship their own code)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_out(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _rows(cache, owner: torch.Tensor) -> DynamicCache:
    """A cache of the rows `owner` of `cache` (index_select: advanced indexing is ~5x slower on CPU)."""
    return DynamicCache(ddp_cache_data=[(k.index_select(0, owner), v.index_select(0, owner)) for k, v, *_ in cache])


def _common(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


# --- finding the shared prefixes ----------------------------------------------------------------


def shared_prefixes(prompts: list[list[int]]) -> list[tuple[int, int, int]]:
    """(start, stop, prefix length) of consecutive runs of prompts that share a prefix, found on
    the token ids. A prompt joins the run unless what the run would stop sharing, paid by each of
    its n prompts, exceeds what a new run would compute again: n * (shared - common) > common
    (an episode's queries share its demonstrations; the next episode shares only what comes
    before them). A prefix always leaves every prompt at least its last token, and a run keeps
    none when it would save less than a token a prompt (its own forward would cost more)."""
    if not prompts:
        return []
    runs, start, shared = [], 0, len(prompts[0]) - 1
    for i in range(1, len(prompts)):
        n = i - start
        common = min(_common(prompts[i - 1], prompts[i]), len(prompts[i]) - 1, shared)
        if n >= 2 and n * (shared - common) > common:
            runs.append((start, i, shared))
            start, shared = i, len(prompts[i]) - 1
        else:
            shared = common
    runs.append((start, len(prompts), shared))
    return [(a, b, n if n > 0 and (b - a - 1) * n >= b - a else 0) for a, b, n in runs]


# --- the model the cache path drives ----------------------------------------------------------


def _cache_target(model):
    """(causal LM to run, soft-prompt embeddings [1, m, d] or None), or None when the cache path
    cannot serve the model (a prompt-learning method other than prompt tuning / P-tuning)."""
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        if str(getattr(peft_config.peft_type, "value", peft_config.peft_type)) not in ("PROMPT_TUNING", "P_TUNING"):
            return None
        return model.base_model, model.get_prompt(batch_size=1)
    return model, None


def _packs(lm) -> bool:
    """Whether the packed path can drive `lm`: full attention in every layer (no sliding window)
    and an attention that takes a 4D mask (sdpa, eager; not flash-attention)."""
    if getattr(lm.config, "_attn_implementation", None) not in (None, "sdpa", "eager"):
        return False
    return not any(getattr(layer, "is_sliding", False) for layer in DynamicCache(config=lm.config).layers)


@torch.no_grad()
def score_choices(model, prompts: list[list[int]], choices: list[list[int]], batch_size: int | None = None,
                  pad_id: int = 0, budget: Budget | None = None):
    """Log-likelihood [len(prompts), len(choices)] of every choice after every prompt (summed over
    the choice's tokens), and the same divided by the choice's token count. Shared prefixes are
    found and computed once (`shared_prefixes`, `score_episodes`). `batch_size` caps the queries
    per forward; `budget` bounds the tokens of one forward (default: `Budget.for_device`)."""
    runs = shared_prefixes(prompts)
    episodes = [(prompts[a][:n], [p[n:] for p in prompts[a:b]]) for a, b, n in runs]
    return score_episodes(model, episodes, choices, batch_size=batch_size, pad_id=pad_id, budget=budget)


@torch.no_grad()
def score_episodes(model, episodes: list[tuple[list[int], list[list[int]]]], choices: list[list[int]],
                   batch_size: int | None = None, pad_id: int = 0, budget: Budget | None = None):
    """Score episodes given as (shared prefix, [query suffix, ...]): the prefix runs once, each
    suffix (>= 1 token) against its cache. Rows come out in episode order, then suffix order."""
    model.eval()
    lengths = np.array([len(c) for c in choices], dtype=float)
    episodes = [(prefix, suffixes) for prefix, suffixes in episodes if suffixes]  # no rows of their own
    if not episodes:
        return np.zeros((0, len(choices))), np.zeros((0, len(choices)))
    target = _cache_target(model)
    plain = all(len(c) == 1 for c in choices) and not any(p for p, _ in episodes) and target and target[1] is None
    if target is None or plain or not _packs(target[0]):  # nothing shared: full prompts, no mask to build
        prompts = [prefix + s for prefix, suffixes in episodes for s in suffixes]
        return score_full_prompts(model, prompts, choices, batch_size=batch_size, pad_id=pad_id, budget=budget)
    if any(not s for _, suffixes in episodes for s in suffixes):
        raise ValueError("every query suffix needs at least one token (the one the label follows)")
    scorer = _CacheScorer(*target, choices, pad_id)
    budget = budget or Budget.for_device(scorer.device)
    queries = scorer.queries_per_block(episodes, batch_size, budget)
    blocks = _blocks(episodes, queries, budget.new)
    out = [scorer.block([episodes[i] for i in block], queries, budget) for block in blocks]
    loglik = np.concatenate(out)
    return loglik, loglik / lengths[None, :]


def _blocks(episodes, queries: int, tokens: int) -> list[list[int]]:
    """Consecutive episodes whose prefixes run in one forward: up to about `queries` queries and
    `tokens` prefix tokens in all, never mixing episodes with and without a prefix (a row with
    nothing to attend to has no softmax)."""
    blocks, current, count, width = [], [], 0, 0
    for i, (prefix, suffixes) in enumerate(episodes):
        wider = max(width, len(prefix))
        if current and (count >= queries or (len(current) + 1) * wider > tokens
                        or bool(prefix) != bool(episodes[current[0]][0])):
            blocks.append(current)
            current, count, wider = [], 0, len(prefix)
        current.append(i)
        count, width = count + len(suffixes), wider
    return blocks + [current] if current else blocks


class _CacheScorer:
    """One model's prefix-cache scoring: a block's prefixes in one forward, then its queries
    packed along the sequence (`pack`) against their episode's rows of that cache."""

    def __init__(self, lm, soft, choices: list[list[int]], pad_id: int):
        self.lm, self.soft, self.pad_id, self.choices = lm, soft, pad_id, [list(c) for c in choices]
        param = next(lm.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.virtual = 0 if soft is None else soft.shape[1]
        self.first = torch.tensor([c[0] for c in choices], device=self.device)
        self.extra = sum(len(c) - 1 for c in choices)  # continuation tokens a query adds
        self.keep = "logits_to_keep" in inspect.signature(lm.forward).parameters
        self.kw = _cache_kw(lm)

    def queries_per_block(self, episodes, batch_size: int | None, budget: Budget) -> int:
        """Queries per block: `batch_size`, or as many as the budget's new tokens hold."""
        if batch_size:
            return int(batch_size)
        return max(1, budget.new // (max(len(s) for _, ss in episodes for s in ss) + self.extra))

    def block(self, episodes, queries: int, budget: Budget) -> np.ndarray:
        """Log-likelihood [n queries, n choices] of a block's episodes."""
        cache, plen, pmask = self.prefixes([p for p, _ in episodes])
        rows = self.pack(episodes, int(plen.max()), queries)
        out = torch.zeros(sum(len(ss) for _, ss in episodes), len(self.choices), device=self.device)
        width = max(sum(len(s) + self.extra for _, s in row) for _, row in rows)
        per_forward = max(1, min(budget.new // width, budget.cached // (pmask.shape[1] + width)))
        start = 0
        while start < len(rows):
            stop, count = start + 1, len(rows[start][1])
            while stop < len(rows) and stop - start < per_forward and count + len(rows[stop][1]) <= queries:
                count, stop = count + len(rows[stop][1]), stop + 1
            self.packed(cache, plen, pmask, rows[start:stop], out)
            start = stop
        return out.cpu().numpy()

    def pack(self, episodes, width: int, queries: int) -> list[tuple[int, list]]:
        """Rows of (episode, [(query number, suffix), ...]): an episode's queries side by side,
        up to about the prefix's width of tokens a row (each query sees only the prefix and its
        own tokens, so a row wider than its prefix would mostly attend to masked keys)."""
        rows, number = [], 0
        for e, (_, suffixes) in enumerate(episodes):
            cap = max(width, max(len(s) for s in suffixes) + self.extra)
            row, used = [], 0
            for s in suffixes:
                if row and (used + len(s) + self.extra > cap or len(row) >= queries):
                    rows.append((e, row))
                    row, used = [], 0
                row.append((number, s))
                used, number = used + len(s) + self.extra, number + 1
            rows.append((e, row))
        return rows

    def prefixes(self, prefixes: list[list[int]]):
        """The block's prefixes (after the soft prompt, if any) in one forward: (cache or None,
        lengths [E], attention mask [E, width])."""
        ids, mask, lengths = (t.to(self.device) for t in _pad(prefixes, self.pad_id))
        if self.soft is not None:
            embeds = self.lm.get_input_embeddings()(ids)
            soft = self.soft.to(embeds.dtype).expand(len(prefixes), -1, -1)
            mask = torch.cat([torch.ones(len(prefixes), self.virtual, dtype=torch.long, device=self.device), mask], 1)
            out = self.lm(inputs_embeds=torch.cat([soft, embeds], 1), attention_mask=mask, use_cache=True,
                          **self._keep(1))
            return _cache_out(out), lengths + self.virtual, mask
        if ids.shape[1] == 0:
            return None, lengths, mask
        out = self.lm(input_ids=ids, attention_mask=mask, use_cache=True, **self._keep(1))
        return _cache_out(out), lengths, mask

    def _keep(self, positions):
        """Logits only where they are read (models whose forward takes `logits_to_keep`)."""
        return {"logits_to_keep": positions} if self.keep else {}

    def layout(self, plen, rows):
        """Token ids, positions, segments (query within the row), choice (-1: the suffix) and
        index within the segment, each [R, T] (padding: segment -1); and the reads: (row, column,
        query number, choice or -1 for every choice's first token, target token)."""
        cols = {k: [] for k in ("ids", "pos", "seg", "ch", "t")}
        reads = []
        for r, (e, queries) in enumerate(rows):
            row = {k: [] for k in cols}
            base = int(plen[e])
            for a, (number, suffix) in enumerate(queries):
                _extend(row, suffix, base, a, -1)
                reads.append((r, len(row["ids"]) - 1, number, -1, 0))
                for j, choice in enumerate(self.choices):
                    reads += [(r, len(row["ids"]) + u, number, j, choice[u + 1]) for u in range(len(choice) - 1)]
                    _extend(row, choice[:-1], base + len(suffix), a, j)
            for k in cols:
                cols[k].append(row[k])
        width = max(len(r) for r in cols["ids"])
        fill = {"ids": self.pad_id, "pos": 0, "seg": -1, "ch": -1, "t": 0}
        out = {k: torch.tensor([r + [fill[k]] * (width - len(r)) for r in v], device=self.device)
               for k, v in cols.items()}
        return out, torch.tensor(reads, device=self.device).reshape(-1, 5)

    def mask(self, layout, prefix_mask) -> torch.Tensor:
        """Additive attention mask [R, 1, T, P + T]: a token sees its prefix, its own query's
        suffix (causally, within the suffix) and its own choice's earlier tokens; padding sees itself."""
        seg, ch, t = layout["seg"], layout["ch"], layout["t"]
        same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] >= 0)
        causal = t[:, None, :] <= t[:, :, None]
        key_suffix, query_suffix = (ch == -1)[:, None, :], (ch == -1)[:, :, None]
        sees = same & ((key_suffix & (~query_suffix | causal)) | ((ch[:, :, None] == ch[:, None, :]) & causal))
        sees |= torch.eye(seg.shape[1], dtype=torch.bool, device=self.device)[None]
        full = torch.cat([prefix_mask.bool()[:, None, :].expand(-1, seg.shape[1], -1), sees], -1)[:, None]
        blocked = torch.finfo(self.dtype).min
        return torch.zeros(full.shape, dtype=self.dtype, device=self.device).masked_fill(~full, blocked)

    def packed(self, cache, plen, pmask, rows, out: torch.Tensor) -> None:
        """One forward of packed rows; adds each read's log-probability into `out`."""
        layout, reads = self.layout(plen, rows)
        owner = torch.tensor([e for e, _ in rows], device=self.device)
        sub = None if cache is None else _rows(cache, owner)
        kept = torch.unique(reads[:, 1]) if self.keep else torch.arange(layout["ids"].shape[1], device=self.device)
        logits = self.lm(input_ids=layout["ids"], attention_mask=self.mask(layout, pmask[owner]),
                         position_ids=layout["pos"], use_cache=False, **{self.kw: sub}, **self._keep(kept)).logits
        logp = logits[reads[:, 0], torch.searchsorted(kept, reads[:, 1].contiguous())].float().log_softmax(-1)
        first = reads[:, 3] == -1
        out.index_add_(0, reads[first, 2], logp[first][:, self.first])
        rest = ~first
        picked = logp[rest].gather(1, reads[rest, 4][:, None])[:, 0]
        out.index_put_((reads[rest, 2], reads[rest, 3]), picked, accumulate=True)


def _extend(row: dict, tokens: list[int], start: int, segment: int, choice: int) -> None:
    row["ids"] += tokens
    row["pos"] += range(start, start + len(tokens))
    row["seg"] += [segment] * len(tokens)
    row["ch"] += [choice] * len(tokens)
    row["t"] += range(len(tokens))


# --- the previous path and the reference -------------------------------------------------------


@torch.no_grad()
def score_full_prompts(model, prompts: list[list[int]], choices: list[list[int]], batch_size: int | None = None,
                       pad_id: int = 0, budget: Budget | None = None):
    """Every prompt in full, batched (right-padded, read at each prompt's own last token); a
    multi-token choice reuses its prompt's KV cache. Serves any model, including every peft
    prompt-learning method (the virtual tokens shift the positions read; their multi-token
    choices run as full sequences, since peft puts its virtual tokens before every forward)."""
    model.eval()
    device = next(model.parameters()).device
    if not batch_size:
        longest = max((len(p) for p in prompts), default=1)
        batch_size = max(1, (budget or Budget.for_device(device)).new // max(1, longest))
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
        elif _cache_target(model) is None or _cache_target(model)[1] is not None:
            out[start : start + len(chunk)] = _score_full_sequences(model, chunk, choices, pad_id, device)
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
    cache = _cache_out(first)
    cache.batch_repeat_interleave(len(choices))
    width = max(len(c) for c in choices)
    cont = torch.zeros((len(choices), width), dtype=torch.long, device=device)
    for j, c in enumerate(choices):
        cont[j, : len(c)] = torch.as_tensor(c)
    attn = torch.ones((len(choices), first.logits.shape[1] + width), dtype=torch.long, device=device)
    for j, c in enumerate(choices):
        attn[j, first.logits.shape[1] + len(c) :] = 0
    logits = model(input_ids=cont, attention_mask=attn, use_cache=False, **{_cache_kw(model): cache}).logits
    logp = logits.float().log_softmax(-1)
    scores = np.zeros(len(choices))
    for j, c in enumerate(choices):
        total = first_logp[c[0]].item()
        total += sum(logp[j, t - 1, c[t]].item() for t in range(1, len(c)))
        scores[j] = total
    return scores


def _score_full_sequences(model, prompts: list[list[int]], choices: list[list[int]], pad_id: int, device):
    """Every (prompt, choice) as one full right-padded row: no cache to carry between forwards."""
    rows = [p + list(c) for p in prompts for c in choices]
    ids, mask, _ = _pad(rows, pad_id)
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    logp = logits[:, logits.shape[1] - ids.shape[1] :].float().log_softmax(-1)  # past any virtual tokens
    out = np.zeros((len(prompts), len(choices)))
    for r, (i, j) in enumerate((i, j) for i in range(len(prompts)) for j in range(len(choices))):
        pos = torch.arange(len(choices[j]), device=device) + len(prompts[i]) - 1
        out[i, j] = logp[r, pos, torch.as_tensor(choices[j], device=device)].sum().item()
    return out


@torch.no_grad()
def score_naive(model, prompts: list[list[int]], choices: list[list[int]], **_):
    """Reference scoring: one unbatched full-sequence forward per (prompt, choice)."""
    model.eval()
    device = next(model.parameters()).device
    out = np.zeros((len(prompts), len(choices)))
    for i, prompt in enumerate(prompts):
        for j, choice in enumerate(choices):
            seq = torch.tensor([prompt + list(choice)], device=device)
            logits = model(input_ids=seq).logits[0]
            logp = logits[logits.shape[0] - seq.shape[1] :].float().log_softmax(-1)  # past any virtual tokens
            out[i, j] = sum(logp[len(prompt) + t - 1, tok].item() for t, tok in enumerate(choice))
    lengths = np.array([len(c) for c in choices], dtype=float)
    return out, out / lengths[None, :]
