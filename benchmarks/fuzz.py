"""Fuzzed study YAMLs: seeded random mutations of the shipped studies, each checked with `fsv validate`
(in process, through click) and, when refused, with `fsv run` into a fresh folder.

Every mutation must end in `valid` (exit 0) or a refusal (exit 2) whose message names the field
(`error: FIELD: VALUE is not accepted; ...`), within a time limit, and a refused `fsv run` must leave
its storage folder unwritten. Anything else -- a traceback, another exit status, a hang -- is a
finding. Mutations: a value of another type or out of range, unknown keys (ASCII and unicode), deleted
keys, huge lists, YAML anchors / aliases (and an alias bomb), tags (`!!python/object`, `!!binary`,
`!!set`, custom), torn text, stray bytes, non-UTF-8 bytes, duplicate keys, a top level that is no
mapping.

    python benchmarks/fuzz.py [--count 300] [--seed 0]

prints the outcome counts per mutation kind and every finding (tests/test_fuzz.py runs a subset).
"""

from __future__ import annotations

import argparse
import copy
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted((ROOT / "study").glob("*.yaml"))
LIMIT_S = 20  # CPU seconds (not wall: the machine may be shared); more to validate one mutation is a finding

ODD_VALUES = [None, True, False, 0, -1, 1, 2**63, -(2**63), 1e308, float("nan"), float("inf"), 0.5, -0.0,
              "", "x", "é世界🙂", "\x00", "world-xs", "none", [], {}, [1, 2], {"a": 1}, ["é"], "1e3", "NaN",
              "a" * 10_000, [None], [[1]], {"": None}]
UNKNOWN_KEYS = ["colour", "modles", "ключ", "模型", "🙂", "", "__class__", "!!python/object", "k k", "0"]


def _paths(node, prefix=()):
    """Every (path, value) of a nested dict/list, the containers included."""
    yield prefix, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


def _set(data, path, value):
    node = data
    for part in path[:-1]:
        node = node[part]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value


_DELETE = object()


def _dump(data) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def _data_mutation(rng: random.Random, data: dict) -> tuple[str, str]:
    paths = [p for p, _ in _paths(data) if p]
    path = rng.choice(paths)
    kind = rng.choice(["type", "type", "delete", "unknown_key", "huge_list", "range"])
    if kind == "type":
        _set(data, path, copy.deepcopy(rng.choice(ODD_VALUES)))
    elif kind == "delete":
        _set(data, path, _DELETE)
    elif kind == "unknown_key":
        mappings = [p for p, v in _paths(data) if isinstance(v, dict)]
        target = rng.choice(mappings)
        node = data
        for part in target:
            node = node[part]
        node[rng.choice(UNKNOWN_KEYS)] = rng.choice(ODD_VALUES[:12])
    elif kind == "huge_list":
        lists = [p for p, v in _paths(data) if isinstance(v, list) and p]
        size = rng.choice([1000, 20_000, 200_000])
        _set(data, rng.choice(lists) if lists else path, list(range(size)) if rng.random() < 0.7 else ["x"] * size)
    else:
        ints = [p for p, v in _paths(data) if isinstance(v, (int, float)) and not isinstance(v, bool) and p]
        _set(data, rng.choice(ints) if ints else path, rng.choice([0, -1, -5, 10**6, 10**12, 2**64, 1e-300, -1e9]))
    return kind, _dump(data)


TAGS = ["!!python/object:os.system", "!!python/object/apply:os.system ['echo pwned']", "!!python/name:os.system",
        "!!binary aGVsbG8=", "!!set {a, b}", "!!timestamp 2001-12-14", "!!float nan", "!custom x", "!!str 1",
        "!!int '7'", "!!omap [{a: 1}]", "!!null ''"]


def _text_mutation(rng: random.Random, text: str) -> tuple[str, str | bytes]:
    lines = text.splitlines()
    kind = rng.choice(["tag", "alias", "alias_bomb", "truncate", "stray_bytes", "non_utf8", "duplicate_key",
                       "not_a_mapping", "tabs"])
    where = rng.randrange(len(lines))
    if kind == "tag":
        keyed = [i for i, line in enumerate(lines) if ":" in line and not line.lstrip().startswith("#")]
        i = rng.choice(keyed)
        key = lines[i].split(":", 1)[0]
        lines[i] = f"{key}: {rng.choice(TAGS)}"
    elif kind == "alias":
        lines.insert(0, "anchors: &a {k: [1, 2], n: [4]}")
        lines.append(rng.choice(["seeds: *a", "models: *a", "regimes: {few_shot: *a}", "tasks: [*a]", "x: *nope"]))
    elif kind == "alias_bomb":
        depth = rng.choice([4, 6, 9])
        bomb = ["b0: &b0 [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]"]
        bomb += [f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 10) + "]" for i in range(1, depth)]
        lines = bomb + lines + [rng.choice(["seeds: *b%d" % (depth - 1), "models: *b%d" % (depth - 1)])]
    elif kind == "truncate":
        cut = rng.randrange(len(text))
        return kind, text[:cut]
    elif kind == "stray_bytes":
        cut = rng.randrange(len(text))
        return kind, text[:cut] + rng.choice(["{", "]", ": :", "\x00", "\ufeff", "- - -", "%YAML 9.9\n", "&", "*"]) + text[cut:]
    elif kind == "non_utf8":
        cut = rng.randrange(len(text))
        return kind, text[:cut].encode() + bytes([0xFF, 0xFE, 0x80]) + text[cut:].encode()
    elif kind == "duplicate_key":
        lines.append(lines[where] if ":" in lines[where] else "name: twice")
    elif kind == "not_a_mapping":
        return kind, rng.choice(["", "# only a comment\n", "- a\n- b\n", "42\n", "'name'\n", "~\n", "---\n---\n"])
    else:
        lines[where] = "\t" + lines[where]
    return kind, "\n".join(lines) + "\n"


def mutations(count: int, seed: int = 0):
    """`count` seeded (kind, source study, YAML text or bytes) mutations; the same seed, the same list."""
    rng = random.Random(seed)
    for _ in range(count):
        source = rng.choice(STUDIES)
        text = source.read_text()
        if rng.random() < 0.6:
            kind, mutated = _data_mutation(rng, yaml.safe_load(text))
        else:
            kind, mutated = _text_mutation(rng, text)
        yield kind, source.name, mutated


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


def check(mutated: str | bytes, scratch: Path) -> tuple[str, str]:
    """('valid' | 'refused' | 'FINDING: ...', the output)."""
    from click.testing import CliRunner

    from fsv.cli import main

    path = scratch / "study.yaml"
    path.write_bytes(mutated if isinstance(mutated, bytes) else mutated.encode("utf-8", "surrogatepass"))
    runner = CliRunner()
    previous = signal.signal(signal.SIGPROF, _alarm)
    signal.setitimer(signal.ITIMER_PROF, LIMIT_S)
    try:
        result = runner.invoke(main, ["validate", str(path)])
        outcome = _judge(result)
        if outcome == "refused":
            storage = scratch / "storage"
            ran = runner.invoke(main, ["run", str(path), "--storage", str(storage), "--no-analyze"])
            if _judge(ran) != "refused" or storage.exists():
                outcome = f"FINDING: fsv run exit {ran.exit_code}, storage written: {storage.exists()}"
    except _Hang:
        return f"FINDING: no answer within {LIMIT_S} CPU seconds", ""
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
    return outcome, result.output


def _judge(result) -> str:
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return f"FINDING: {type(result.exception).__name__}: {result.exception}"[:300]
    if result.exit_code == 0 and ": valid," in result.output:
        return "valid"
    if result.exit_code == 2 and "error: " in result.output and " is not accepted; " in result.output:
        return "refused"
    return f"FINDING: exit {result.exit_code}: {result.output[-300:]}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    outcomes, findings, t0 = Counter(), [], time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for i, (kind, source, mutated) in enumerate(mutations(args.count, args.seed)):
            scratch = Path(tmp, str(i))
            scratch.mkdir()
            outcome, output = check(mutated, scratch)
            outcomes[(kind, outcome if not outcome.startswith("FINDING") else "FINDING")] += 1
            if outcome.startswith("FINDING"):
                findings.append((i, kind, source, outcome))
    print(f"{args.count} mutations (seed {args.seed}) in {time.time() - t0:.0f} s")
    for (kind, outcome), n in sorted(outcomes.items()):
        print(f"  {kind:14} {outcome:8} {n}")
    for i, kind, source, outcome in findings:
        print(f"  #{i} {kind} of {source}: {outcome}")
    print(f"findings: {len(findings)}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
