"""Command-line glue shared by the Hydra scripts (kept out of the library: Hydra lives in scripts/ only)."""

from __future__ import annotations

import logging
import math
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")
_MISSING = object()
# PyOpenGL (imported for rendering) logs at INFO that an optional accelerator is missing; Hydra's logging shows INFO
logging.getLogger("OpenGL.acceleratesupport").setLevel(logging.WARNING)


def _group_names(config_dir: str) -> set[str]:
    return {p.name for p in Path(config_dir).iterdir() if p.is_dir()}


def check_overrides(config_name: str, argv: list[str] | None = None, config_dir: str = CONFIG_DIR) -> None:
    """Exit with a clear message when a ``key=value`` override names a key the config does not have.

    Hydra itself lists the valid choices of a config group (``env=...``); for plain keys it only says the key is
    not in the struct. Here the message lists the valid keys at that level, so a typo is fixed in one go.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    argv = sys.argv[1:] if argv is None else argv
    groups = _group_names(config_dir)
    group_args = [a for a in argv if "=" in a and a.split("=", 1)[0] in groups]
    sweep = any(a in ("-m", "--multirun") for a in argv)
    for arg in group_args:  # a misspelt env/algo/task: one line (Hydra's own report is about twenty)
        group, choice = arg.split("=", 1)
        choice = choice.strip("'\"")
        if sweep or any(c in choice for c in ",()*"):  # a Hydra sweep (a,b / glob(...) / range(...)): Hydra's to read
            continue
        options = sorted(p.stem for p in (Path(config_dir) / group).glob("*.yaml"))
        if choice == "null":  # Hydra's CLI fails on it with a traceback
            sys.exit(f"error: {group}=null is not a choice on the command line: leave {group} out for the default, "
                     f"or pick one of: {', '.join(options)}")
        if choice not in options:
            import difflib

            close = difflib.get_close_matches(choice, options, n=1)
            sys.exit(f"error: {group}={choice!r} is not a known {group}"
                     + (f" (did you mean {close[0]}?)" if close else "") + f"; expected one of: {', '.join(options)}")
    plain = [a for a in argv if "=" in a and not a.startswith(("+", "~", "hydra.", "-")) and a not in group_args]
    for arg in plain:  # env.name=X would rename the chosen env's config, keeping that env's settings under X's name
        group, _, leaf = arg.split("=", 1)[0].partition(".")
        if group in groups and leaf == "name":
            sys.exit(f"error: {group}.name= renames the {group} chosen and keeps its settings; choose the {group} "
                     f"itself with {group}=<name> (one of the configs in configs/{group}/)")
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=group_args, return_hydra_config=True)
    except HydraException:
        return  # Hydra reports anything else about a group choice itself
    # the groups this config's defaults list names, chosen or not (`env: null` adds no key, yet env=... is valid)
    used_groups = sorted(groups & (set(cfg.hydra.runtime.choices) | set(cfg)))
    for arg in plain:
        key = arg.split("=", 1)[0]
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent, default=_MISSING) if parent else cfg
        if not (isinstance(node, DictConfig) and leaf in node):  # `in` also holds for mandatory (???) values
            valid = sorted(k for k in node if parent or k != "hydra") if isinstance(node, DictConfig) else []
            where = f"under '{parent}'" if parent else "at the top level"
            sys.exit(
                f"error: unknown config key '{key}'. Valid keys {where}: {', '.join(map(str, valid)) or '(none)'}"
                + (f"; valid config groups: {', '.join(used_groups)}" if not parent and used_groups else "")
            )


def user_override_keys() -> set[str]:
    """Keys the user set on the command line (from Hydra's record of the task overrides)."""
    from hydra.core.hydra_config import HydraConfig

    groups = _group_names(CONFIG_DIR)  # `algo=diffuser` picks a group option; it sets no key under algo.
    keys = set()
    for override in HydraConfig.get().overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in groups:
            keys.add(key)
    return keys


def to_plain(cfg: Any) -> Any:
    """A resolved plain-Python copy of a config node (dicts and lists), for the library's keyword arguments."""
    if isinstance(cfg, (DictConfig,)) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def sampling_overrides_as_additions(argv: list[str], prefixes: tuple[str, ...] = ("sampling.",)) -> list[str]:
    """``sampling.k=v`` -> ``++sampling.k=v``: ``sampling: {}`` declares no keys, so Hydra must add them (the same
    for any other open-ended section named in ``prefixes``)."""
    return [f"++{a}" if a.startswith(prefixes) and "=" in a else a for a in argv]


def default_out(policy_path: str | Path, env_name: str, kind: str = "eval") -> Path:
    """Beside the artifact: ``<policy>/../<kind>_<env>.json`` for an artifact folder, and
    ``<kind>_<file stem>_<env>.json`` for a ``.safetensors`` file, so that two files of one folder do not overwrite
    each other's results (env ids made file-name safe)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", env_name)
    path = Path(policy_path).resolve()
    name = f"{kind}_{path.stem}_{safe}" if path.suffix == ".safetensors" else f"{kind}_{safe}"
    return path.parent / f"{name}.json"


def check_values(cfg: DictConfig, ints: dict[str, int] = {}, optional_ints: dict[str, int] = {},  # noqa: B006
                 flags: tuple[str, ...] = (), out: str | None = "out", seed_span: str | int | None = None) -> None:
    """Exit with one line naming the key when a value is out of its range, before anything is loaded or run:
    ``ints`` (key -> minimum), ``optional_ints`` (null or >= minimum), boolean ``flags``, ``device`` (must exist
    here) and ``out`` (its folder must be writable; tried with a temporary file that is removed at once).
    ``seed_span`` (a key such as ``episodes``, or a count): ``seed`` must leave room for that many consecutive
    seeds below 2**32 (episode i resets with seed + i), as ``diffusion_rl.evaluation.evaluate`` requires."""
    import os
    import tempfile

    def fail(key: str, expected: str) -> None:
        sys.exit(f"error: {key}: expected {expected}, got {cfg[key]!r}")

    for key, minimum in {**ints, **optional_ints}.items():
        value = cfg[key]
        if value is None and key in optional_ints:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            fail(key, ("null or " if key in optional_ints else "") + f"an integer >= {minimum}")
    for key in flags:
        if not isinstance(cfg[key], bool):
            fail(key, "true or false")
    if seed_span is not None:
        span, named = (int(cfg[seed_span]), f"{seed_span}={cfg[seed_span]}") if isinstance(seed_span, str) \
            else (int(seed_span), f"{seed_span} episode{'s' if seed_span != 1 else ''}")
        if cfg.seed >= 2**32 - span:
            fail("seed", f"an integer in [0, {2**32 - span}) (episode i resets with seed + i, below 2**32 for "
                         f"{named})")
    if "device" in cfg:
        from diffusion_rl.policy import check_device

        try:
            check_device(cfg.device)
        except ValueError as err:
            sys.exit(f"error: device: {err}")
    if out and cfg.get(out):
        path = Path(str(cfg[out])).expanduser()
        if path.suffix != ".json":
            fail(out, "a path ending in .json")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".probe")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            sys.exit(f"error: {out}={cfg[out]}: cannot write there ({err.strerror or err})")


def load_policy_for_cli(cfg: DictConfig) -> tuple[Any, str, str]:
    """``Policy.load(cfg.policy)`` with ``cfg.sampling`` overrides applied and the env resolved (``cfg.env`` or
    the artifact's); exits with one clear message on a missing path, a bad artifact or an unknown setting."""
    if not cfg.policy:
        sys.exit("error: policy=<path> is required: an artifact folder or .safetensors file "
                 "(Policy.save writes one)")
    from diffusion_rl.nets.compiled import check_precision, resolve_compile
    from diffusion_rl.policy import Policy, resolve_device

    policy_path = str(cfg.policy)
    compile_, precision = cfg.get("compile", False), cfg.get("precision", "float32")
    try:  # the process's settings first: their own message, not "cannot load policy"
        resolve_compile(compile_, resolve_device(cfg.device))
        check_precision(precision)
    except ValueError as err:
        sys.exit(f"error: {err}")
    try:
        policy = Policy.load(policy_path, device=cfg.device, compile=compile_, precision=precision)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: cannot load policy={policy_path}: {err}")
    overrides = to_plain(cfg.sampling) or {}
    unknown = sorted(set(overrides) - set(policy.sampling))
    unused = policy.algo.unused_settings()
    idle = [k for k in unknown if k in unused]
    if idle:
        sys.exit(f"error: sampling.{idle[0]} has no effect: {unused[idle[0]]}")
    if unknown:
        sys.exit(f"error: unknown sampling setting(s) {unknown}; this policy's settings are: "
                 f"{', '.join(sorted(policy.sampling))}")
    # the sampler first: whether steps or eta count depends on it (sampling.sampler=ddim sampling.steps=5 on a
    # DDPM artifact), whatever order they were typed in
    with warnings.catch_warnings():  # "steps kept but not read" is told once all overrides are in (below)
        warnings.simplefilter("ignore", UserWarning)
        for key, value in sorted(overrides.items(), key=lambda kv: kv[0] != "sampler"):
            try:
                setattr(policy, key, value)
            except ValueError as err:
                sys.exit(f"error: sampling.{key}: {err}")
    if "sampler" in overrides:
        policy._warn_idle()
    check_sampler_fits(policy)
    execution_options = to_plain(cfg.get("execution_options")) or {}
    if execution_options:
        try:
            policy.set_execution(**execution_options)
        except (TypeError, ValueError) as err:
            sys.exit(f"error: execution_options: {err}")
    if cfg.get("env") and cfg.get("task"):
        sys.exit("error: env= and task= both name the environment: pass one")
    env_name = cfg.env.name if cfg.get("env") else cfg.task.name if cfg.get("task") else policy.env_name
    if not env_name:
        from hydra.core.hydra_config import HydraConfig

        tasks = "task" in HydraConfig.get().runtime.choices  # evaluate.py scores robot tasks, diagnose.py does not
        sys.exit(f"error: the artifact {policy_path} names no environment; pass env=<catalogue name>"
                 + (" or task=<robot task>" if tasks else ""))
    check_env_fits(policy, env_name)
    return policy, policy_path, env_name


def check_sampler_fits(policy: Any) -> None:
    """Exit with one line when the policy's sampler does not run on its model's forward process (``heun`` on a
    diffusion model), before the first plan would raise it."""
    from diffusion_rl.algos._common import check_process

    config = policy.algo.config()
    steps = config.get("num_steps")
    if "process" not in config or isinstance(steps, bool) or not isinstance(steps, int):
        return  # no forward process to check (behaviour cloning)
    try:
        check_process(config, policy.sampling, steps)
    except ValueError as err:
        sys.exit(f"error: sampling.sampler: {err}")


def check_env_fits(policy: Any, env_name: str) -> None:
    """Exit with one line naming ``env`` when its observations or actions are not the sizes the policy was
    trained on (one env is built to read its spaces; the catalogue does not record them)."""
    import gymnasium as gym

    from diffusion_rl.evaluation import resolve_env

    try:
        gym_id, _ = resolve_env(env_name)
        env = gym.make(gym_id)
    except (ValueError, ImportError, gym.error.Error) as err:
        sys.exit(f"error: env: {err}")
    try:
        spaces = {"observations": env.observation_space, "actions": env.action_space}
    finally:
        env.close()
    trained_on = f" ({policy.env_name})" if policy.env_name and policy.env_name != env_name else ""
    for what, size in (("observations", policy.obs_dim), ("actions", policy.act_dim)):
        shape = getattr(spaces[what], "shape", None)
        if isinstance(spaces[what], gym.spaces.Box) and tuple(shape) != (size,):
            sys.exit(f"error: env: expected an environment with {what} of size {size}, as the policy was trained "
                     f"on{trained_on}; got {env_name} ({gym_id}) with {what} of shape {list(shape)}")


def mean_pm(mean: float, stderr: float | None, scale: float = 1.0) -> str:
    """``"71.2 ± 3.4"``; the standard error left out where it is undefined (NaN: one episode) or missing."""
    text = f"{scale * mean:.1f}"
    return text + (f" ± {scale * stderr:.1f}" if stderr is not None and math.isfinite(stderr) else "")


def score_lines(result: Any, label_width: int = 0) -> list[str]:
    """The lines the scripts print for an ``EvalResult``: the D4RL-normalized score and the success rate, where the
    result has them, each as mean ± standard error (no "± nan" for one episode); a score under another time limit
    than the catalogue's says so. Labels padded to ``label_width``."""
    n = result.episodes
    episodes = f"{n} episode{'s' if n != 1 else ''}"
    lines = []
    if result.normalized_score_mean is not None:
        # under another time limit than the catalogue's the references still apply, but it is not D4RL's score
        how = (f"normalized with D4RL's references, {result.time_limit_note}"
               if getattr(result, "time_limit_differs", False) else "D4RL-normalized")
        lines.append(f"{'score:':<{label_width}} {mean_pm(result.normalized_score_mean, result.normalized_score_stderr)}"
                     f" ({how}, {episodes})")
    if result.success_rate_mean is not None:
        lines.append(f"{'success:':<{label_width}} {mean_pm(result.success_rate_mean, result.success_rate_stderr, 100)}%"
                     f" ({episodes})")
    return lines


def run_main(main: Any, hint: str = "") -> None:
    """Run a Hydra ``main``; Ctrl-C ends it with one line (and ``hint``) instead of a traceback, exit status 130."""
    try:
        main()
    except KeyboardInterrupt:
        print(f"\ninterrupted (Ctrl-C){'; ' + hint if hint else ''}", file=sys.stderr)
        sys.exit(130)
