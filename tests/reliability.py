"""Reliability fuzz of the deployable surface: random inputs to ``Policy.act``/``plan`` and damaged artifacts.

    python -m tests.reliability --inputs 2000 --seed 0         # the counts recorded in docs/reliability.md

Every case ends in one of: ``ok`` (a finite action inside the recorded action space), ``clean`` (a ValueError or
TypeError from the input contract, an ``ArtifactError`` or ``FileNotFoundError`` from loading), or a failure:
``silent`` (NaN, inf or out-of-bounds actions returned), ``crash`` (any other exception type) or ``hang`` (no
answer within the time limit). tests/test_reliability.py runs a smaller draw and requires zero failures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffusion_rl import Policy
from diffusion_rl.artifact import ArtifactError
from tests.test_policy import ACT_DIM, ACT_MEAN, OBS_DIM, OBS_MEAN, make_policy

LOW, HIGH = ACT_MEAN - 0.02, ACT_MEAN + 0.02
CLEAN_INPUT = (ValueError, TypeError)
CLEAN_LOAD = (ArtifactError, FileNotFoundError)


class _Hang(Exception):
    pass


def _with_alarm(seconds: int, fn: Callable[[], Any]) -> Any:
    def on_alarm(*_: Any) -> None:
        raise _Hang

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        return fn()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _judge_actions(out: Any) -> str:
    arr = out.detach().cpu().numpy() if torch.is_tensor(out) else np.asarray(out)
    if arr.dtype.kind != "f" or arr.shape[-1:] != (ACT_DIM,) or not np.all(np.isfinite(arr)):
        return "silent"
    if np.any(arr < np.float32(LOW)) or np.any(arr > np.float32(HIGH)):
        return "silent"
    return "ok"


def _outcome(fn: Callable[[], Any], clean: tuple[type[BaseException], ...], seconds: int = 20) -> tuple[str, str]:
    try:
        out = _with_alarm(seconds, fn)
    except _Hang:
        return "hang", ""
    except clean as err:
        return "clean", type(err).__name__
    except Exception as err:  # noqa: BLE001 - counting exactly these is the point
        return "crash", f"{type(err).__name__}: {err}"[:200]
    return _judge_actions(out), ""


# --- random inputs -----------------------------------------------------------------------------------------

_DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "bool",
           "complex64", "object", "str", "timedelta64[s]"]
_SPECIAL = [0.0, 1.0, -1.0, 1e3, 1e6, -1e6, 1e30, -1e30, 1e300, np.nan, np.inf, -np.inf, 5e-324]


def random_input(rng: np.random.Generator) -> Any:
    """One observation of a random kind: shape, dtype, values, strides, container, numpy or torch."""
    shape = [(OBS_DIM,), (1, OBS_DIM), (int(rng.integers(2, 6)), OBS_DIM), (0, OBS_DIM), (OBS_DIM - 1,),
             (OBS_DIM + 1,), (2, 3, OBS_DIM), (), (OBS_DIM, 1)][int(rng.integers(9))]
    kind = rng.random()
    if kind < 0.5:
        values = OBS_MEAN + 3.0 * rng.normal(size=shape)
    elif kind < 0.8:
        values = rng.choice(np.asarray(_SPECIAL), size=shape)
    else:
        values = OBS_MEAN + 3.0 * rng.normal(size=shape)
        if values.size:
            values.reshape(-1)[int(rng.integers(values.size))] = rng.choice(np.asarray(_SPECIAL))
    values = np.asarray(values)
    dtype = _DTYPES[int(rng.integers(len(_DTYPES)))]
    with np.errstate(all="ignore"):
        try:
            arr = values.astype(dtype)
        except (TypeError, ValueError):
            arr = values
    if arr.ndim and rng.random() < 0.3:
        arr = arr[::-1]
    container = rng.random()
    if container < 0.15:
        return arr.tolist()
    if container < 0.45 and arr.dtype.kind in "fiub" and arr.dtype != np.uint16:
        t = torch.from_numpy(np.array(arr, order="C", copy=True))
        if rng.random() < 0.2 and t.ndim == 2:
            t = t.t().contiguous().t()  # a non-contiguous view
        return t
    return arr


def run_inputs(n: int, seed: int) -> tuple[Counter, list[str]]:
    rng = np.random.default_rng(seed)
    policies = [make_policy(a, action_bounds=([LOW] * ACT_DIM, [HIGH] * ACT_DIM))
                for a in ("decision_diffuser", "diffuser")]
    counts: Counter = Counter()
    failures: list[str] = []
    for i in range(n):
        policy = policies[i % 2]
        obs = random_input(rng)
        call = (lambda: policy.act(obs)) if rng.random() < 0.7 else (lambda: policy.plan(obs).actions)
        policy.reset()
        outcome, detail = _outcome(call, CLEAN_INPUT)
        counts[outcome] += 1
        if outcome not in ("ok", "clean"):
            failures.append(f"input {i}: {outcome} {detail} ({type(obs).__name__} {getattr(obs, 'dtype', '')} "
                            f"{getattr(obs, 'shape', '')})")
    return counts, failures


# --- damaged artifacts -------------------------------------------------------------------------------------

def _config_mutations(config: dict[str, Any]) -> list[tuple[str, Callable[[dict[str, Any]], Any]]]:
    """(name, mutate(config) -> new config) pairs: every key removed, and replaced by values of wrong kinds."""
    bad_values = [None, "x", -1, 0, True, 1e30, float("nan"), [], {}, [1, 2], {"a": 1}, 10**12]
    cases: list[tuple[str, Callable[[dict[str, Any]], Any]]] = []
    paths = [("format",), ("format_version",), ("algorithm",), ("algo_config",), ("normalizers",), ("sampling",),
             ("execution",), ("execution_options",), ("seed",), ("action_bounds",), ("obs_dim",), ("act_dim",),
             ("algo_config", "horizon"), ("algo_config", "obs_dim"), ("algo_config", "num_steps"),
             ("algo_config", "dim"), ("algo_config", "history"), ("algo_config", "prediction"),
             ("algo_config", "schedule"), ("sampling", "steps"), ("sampling", "guidance_weight"),
             ("sampling", "target_return"), ("normalizers", "observations"), ("normalizers", "actions")]

    def setter(path: tuple[str, ...], value: Any, delete: bool = False) -> Callable[[dict[str, Any]], Any]:
        def mutate(cfg: dict[str, Any]) -> Any:
            cfg = json.loads(json.dumps(cfg))
            node = cfg
            for key in path[:-1]:
                node = node[key]
            if delete:
                node.pop(path[-1], None)
            else:
                node[path[-1]] = value
            return cfg
        return mutate

    for path in paths:
        cases.append((f"delete {'.'.join(path)}", setter(path, None, delete=True)))
        for value in bad_values:
            cases.append((f"{'.'.join(path)} = {value!r}", setter(path, value)))
    cases.append(("config is a list", lambda cfg: [cfg]))
    cases.append(("config nested 100000 deep", lambda cfg: "[" * 100000 + "]" * 100000))
    return cases


def _weight_mutations() -> list[tuple[str, Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]]]:
    def first_float(sd: dict[str, torch.Tensor]) -> str:
        return next(k for k, v in sd.items() if v.is_floating_point())

    def change(fn: Callable[[dict[str, torch.Tensor], str], None]):
        def mutate(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            sd = dict(sd)
            fn(sd, first_float(sd))
            return sd
        return mutate

    return [
        ("nan weight", change(lambda sd, k: sd.__setitem__(k, torch.full_like(sd[k], float("nan"))))),
        ("inf weight", change(lambda sd, k: sd.__setitem__(k, torch.full_like(sd[k], float("inf"))))),
        ("1e30 weight", change(lambda sd, k: sd.__setitem__(k, torch.full_like(sd[k], 1e30)))),
        ("weight removed", change(lambda sd, k: sd.pop(k))),
        ("extra weight", change(lambda sd, k: sd.__setitem__("extra.weight", torch.zeros(3)))),
        ("wrong shape", change(lambda sd, k: sd.__setitem__(k, torch.zeros(7, 7)))),
        ("wrong dtype", change(lambda sd, k: sd.__setitem__(k, sd[k].to(torch.float64)))),
        ("int weights", change(lambda sd, k: sd.__setitem__(k, sd[k].to(torch.int32)))),
    ]


def run_artifacts(seed: int) -> tuple[Counter, list[str], int]:
    from safetensors.torch import load_file, save_file

    root = Path(tempfile.mkdtemp(prefix="reliability_"))
    counts: Counter = Counter()
    failures: list[str] = []
    cases = 0
    try:
        policy = make_policy("decision_diffuser", seed=seed, action_bounds=([LOW] * ACT_DIM, [HIGH] * ACT_DIM))
        good = policy.save(root / "good")
        config = json.loads((good / "config.json").read_text())
        weights = (good / "model.safetensors").read_bytes()
        obs = np.full((2, OBS_DIM), OBS_MEAN, dtype=np.float32)

        def check(name: str, path: Path) -> None:
            nonlocal cases
            cases += 1

            def load_and_act() -> Any:
                return Policy.load(path).act(obs)

            outcome, detail = _outcome(load_and_act, CLEAN_LOAD + CLEAN_INPUT)
            counts[outcome] += 1
            if outcome not in ("ok", "clean"):
                failures.append(f"artifact {name}: {outcome} {detail}")

        def fresh(name: str) -> Path:
            d = root / f"case{cases}"
            d.mkdir()
            (d / "model.safetensors").write_bytes(weights)
            (d / "config.json").write_text(json.dumps(config))
            return d

        for name, mutate in _config_mutations(config):
            d = fresh(name)
            new = mutate(config)
            (d / "config.json").write_text(new if isinstance(new, str) else json.dumps(new))
            check(name, d)
        for name, mutate in _weight_mutations():
            d = fresh(name)
            save_file(mutate(load_file(str(good / "model.safetensors"))), str(d / "model.safetensors"))
            check(name, d)
        for keep in (0, 1, 8, 100, len(weights) // 2, len(weights) - 1):
            d = fresh(f"weights truncated to {keep} bytes")
            (d / "model.safetensors").write_bytes(weights[:keep])
            check(f"weights truncated to {keep}", d)
        for where in (9, 20, 60, len(weights) // 2):
            d = fresh(f"byte flipped at {where}")
            damaged = bytearray(weights)
            damaged[where] ^= 0xFF
            (d / "model.safetensors").write_bytes(bytes(damaged))
            check(f"byte flipped at {where}", d)
        d = fresh("fifo")
        (d / "model.safetensors").unlink()
        os.mkfifo(d / "model.safetensors")
        check("weights are a FIFO", d)
        d = fresh("folder")
        (d / "config.json").unlink()
        (d / "config.json").mkdir()
        check("config.json is a folder", d)
        d = fresh("devzero")
        (d / "config.json").unlink()
        (d / "config.json").symlink_to("/dev/zero")
        check("config.json links to /dev/zero", d)
        d = fresh("empty config")
        (d / "config.json").write_text("")
        check("empty config.json", d)
        d = fresh("binary config")
        (d / "config.json").write_bytes(bytes(range(256)))
        check("binary config.json", d)
        check("missing folder", root / "nowhere")
        (root / "text.safetensors").write_text("hello")
        check("text file as .safetensors", root / "text.safetensors")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return counts, failures, cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    counts, failures = run_inputs(args.inputs, args.seed)
    print(f"random inputs ({args.inputs}): " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    art, art_failures, cases = run_artifacts(args.seed)
    print(f"damaged artifacts ({cases}): " + ", ".join(f"{k} {v}" for k, v in sorted(art.items())))
    for line in failures + art_failures:
        print("FAIL", line)
    return 1 if failures or art_failures else 0


if __name__ == "__main__":
    sys.exit(main())
