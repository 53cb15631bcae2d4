"""``Policy``: the deployable face of a trained planner.

Raw observations in (numpy or torch, one ``[obs_dim]`` or a batch ``[B, obs_dim]``), raw actions out. The policy
owns the normalizers, the sampler settings (sampler, steps, guidance weight, seed, ...), the observation history,
the execution (first action, plan following or an action queue: :mod:`diffusion_rl.execution`), and the artifact
it was loaded from or saves to.
"""

from __future__ import annotations

import json
import numbers
import os
import warnings
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffusion_rl import __version__
from diffusion_rl.algos import ALGORITHMS, Algorithm, PlanOutput, algorithm_from_config
from diffusion_rl.algos._common import (
    SAMPLER_OPTION_SETTINGS,
    applicable_options,
    auto_clip,
    check_settings,
    check_warm_start,
    idle_sampler_option,
)
from diffusion_rl.artifact import (
    ArtifactError,
    check_network_record,
    check_normalizers_record,
    load_artifact,
    save_artifact,
    to_jsonable,
)
from diffusion_rl.data import Normalizer, normalizer_from_state
from diffusion_rl.execution import EXECUTIONS, Execution, make_execution
from diffusion_rl.nets.compiled import CUDAGraphDenoiser, check_precision, make_denoiser, resolve_compile


def _check_bounds(bounds: Any, act_dim: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(low, high)`` of the action space as float32 tensors ``[act_dim]``, or None; ValueError otherwise."""
    if bounds is None:
        return None
    try:
        low, high = (np.asarray(b, dtype=np.float64) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"action_bounds: expected (low, high), each {act_dim} numbers; got {bounds!r}") from None
    if low.shape != (act_dim,) or high.shape != (act_dim,) or np.isnan(low).any() or np.isnan(high).any() \
            or (low > high).any():
        raise ValueError(f"action_bounds: expected (low, high), each {act_dim} numbers with low <= high; got {bounds!r}")
    return torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)


def _check_metadata(metadata: Any) -> dict[str, Any]:
    """``metadata`` as the dict :meth:`Policy.save` writes to config.json; a ValueError naming what is wrong when it
    cannot be written (an object JSON has no form for), so it fails when given, not at the first save."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata: expected a dict of JSON-ready values or None, got {type(metadata).__name__}")
    try:
        json.dumps(to_jsonable(metadata))
    except (TypeError, ValueError) as err:
        raise ValueError(f"metadata: expected JSON-ready values (numbers, strings, lists, dicts, numpy or torch "
                         f"arrays) to write to config.json: {err}") from None
    return dict(metadata)


def _check_float32(algo: Any) -> None:
    """A model whose weights are not float32 is refused (ValueError) when the policy is built: it plans in
    float32, so ``algo.to(torch.bfloat16)`` failed only at the first ``act``, with torch's dtype mismatch."""
    other = sorted({str(p.dtype).removeprefix("torch.") for p in algo.parameters()
                    if p.is_floating_point() and p.dtype != torch.float32})
    if other:
        raise ValueError(f"algo: expected float32 weights (the policy plans in float32), got {', '.join(other)}; "
                         "for bfloat16 forwards keep the weights float32 and use Policy(..., precision='bfloat16') "
                         "(autocast)")


def _is_int_dtype(dtype: torch.dtype) -> bool:
    """A plain integer dtype (not bool, not quantized)."""
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        return False
    try:
        torch.iinfo(dtype)
    except TypeError:
        return False
    return True


#: what an observation far outside the training data does: see ``Policy.out_of_range``
OUT_OF_RANGE = ("warn", "error", "ignore")
#: a normalized value beyond this is far outside the training data (10 standard deviations for a Gaussian
#: normalizer, 4.5 ranges beyond the data for min-max; a CDF normalizer saturates at 1 and never gets there)
FAR = 10.0

#: no model of this library has a size setting anywhere near this: beyond it a damaged config.json would make
#: the constructor try to allocate terabytes
MAX_CONFIG_INT = 1_000_000


def _check_algo_config(algo_config: Any, path: Any) -> None:
    """Refuse an ``algo_config`` that is not an object, or holds integers no model of this library uses."""
    if not isinstance(algo_config, dict):
        raise ArtifactError(f"{path}: config.json: algo_config must be an object of constructor arguments")

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_CONFIG_INT:
            raise ArtifactError(f"{path}: config.json: {where} = {value} is beyond any model this library builds "
                                f"(at most {MAX_CONFIG_INT:,})")

    walk(algo_config, "algo_config")


#: config.json's top-level settings and the JSON types Policy.save writes for them (None: null allowed)
_CONFIG_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "algorithm": ((str,), "a string"),
    "execution": ((str,), "a string"),
    "env_name": ((str, type(None)), "a string or null"),
    "sampling": ((dict, type(None)), "an object or null"),
    "execution_options": ((dict, type(None)), "an object or null"),
    "metadata": ((dict, type(None)), "an object or null"),
    "written_by": ((dict,), "an object"),
}


#: every top-level key config.json may hold (what Policy.save and save_artifact write)
CONFIG_KEYS = ("format", "format_version", "algorithm", "algo_config", "obs_dim", "act_dim", "horizon",
               "normalizers", "sampling", "execution", "execution_options", "seed", "env_name", "metadata",
               "action_bounds", "written_by")


def _check_config_types(config: dict[str, Any], path: Any) -> None:
    """Refuse, before any work, top-level config.json keys Policy.save never writes (a hand-added
    ``"action_bound"`` would leave the robot without the limits its author believes are installed) and values of
    another JSON type than it writes (a hand-edited ``"seed": null`` or ``"execution": [..]`` would otherwise
    surface as a TypeError, or a seed of 1.7 be silently truncated); ``ArtifactError`` naming the file and key."""
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ArtifactError(f"{path}: config.json: unknown key(s) {unknown}; an artifact holds "
                            f"{', '.join(CONFIG_KEYS)}")
    for key, (types, expected) in _CONFIG_TYPES.items():
        if key in config and not isinstance(config[key], types):
            raise ArtifactError(f"{path}: config.json: {key}: expected {expected}, got {config[key]!r} "
                                f"({type(config[key]).__name__})")
    if "seed" in config:
        try:
            check_seed(config["seed"])
        except ValueError as err:
            raise ArtifactError(f"{path}: config.json: {err}") from None


def _check_sampler(algo: Algorithm, sampling: dict[str, Any]) -> None:
    """Build the sampler ``sampling`` names as ``algo.plan`` will (cached by the algorithm, so the first plan
    reuses it), so a sampler that does not run on the model's forward process (``heun`` on a diffusion model) is
    refused with the sampler's ``ValueError`` now instead of at the first act(). A ``warm_start_t`` below every
    timestep the sampler runs is refused too: a warm replan would run no denoising step at all and return the
    previous plan as it was (``warm_start_t=30`` with DPM-Solver++ 5 over T = 200, whose lowest step is 40)."""
    name = sampling.get("sampler")
    if not isinstance(name, str) or getattr(algo, "schedule", None) is None:
        return  # no sampler setting (behaviour cloning) or no forward process to build it on
    check_warm_start(algo.sampler(name, **applicable_options(name, steps=sampling.get("steps"),
                                                             eta=sampling.get("eta"))), sampling)


def _schedule_steps(algo: Algorithm) -> int | None:
    schedule = getattr(algo, "schedule", None)
    return None if schedule is None else int(schedule.num_steps)


def _real_values(value: Any, expected: str) -> np.ndarray | torch.Tensor:
    """``value`` as a numpy array (anything array-like) or the dense tensor it is; a ``ValueError`` starting with
    ``expected`` unless it holds real floats or integers (not bool, complex, dates, objects or ragged lists)."""
    if torch.is_tensor(value):
        if value.layout != torch.strided or value.is_nested or value.device.type == "meta":
            raise ValueError(f"{expected} as a dense tensor; got a {value.layout} tensor on "
                             f"{value.device}{' (nested)' if value.is_nested else ''}")
        if not (value.dtype.is_floating_point or _is_int_dtype(value.dtype)):  # bool and complex are neither
            raise ValueError(f"{expected}; got dtype {value.dtype}")
        return value
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as err:  # ragged nested lists and the like
        raise ValueError(f"{expected}; got {type(value).__name__} ({err})") from None
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{expected}; got dtype {arr.dtype}")
    return arr


def _check_normalizers(normalizers: dict[str, Any], algo: Algorithm) -> None:
    """Refuse, when the policy is built, normalizers it could not use: not a fitted ``Normalizer`` or of another
    width than the model's observations/actions (found otherwise at the first act, or as an AttributeError)."""
    dims = {"observations": getattr(algo, "obs_dim", None), "actions": getattr(algo, "act_dim", None)}
    for key, normalizer in normalizers.items():
        if not isinstance(normalizer, Normalizer):
            raise ValueError(f"normalizers[{key!r}]: expected a fitted Normalizer (diffusion_rl.data), got "
                             f"{type(normalizer).__name__}")
        if not normalizer.stats:
            raise ValueError(f"normalizers[{key!r}]: {type(normalizer).__name__} is not fitted; call .fit(data) or "
                             "build it with normalizer_from_state(state)")
        if dims.get(key) is not None and normalizer.dim != dims[key]:
            raise ValueError(f"normalizers[{key!r}] normalizes {normalizer.dim} dimensions; {algo.name} has "
                             f"{key} of {dims[key]}")


_F32_MAX = float(np.finfo(np.float32).max)


class ObservationError(ValueError):
    """An observation ``Policy`` refuses (NaN, inf, beyond float32). ``env_ids`` holds the rows of the batch at
    fault (None for one unbatched observation), so a vector-env loop can reset or mask just those."""

    def __init__(self, message: str, env_ids: np.ndarray | None = None) -> None:
        super().__init__(message)
        self.env_ids = None if env_ids is None else np.asarray(env_ids, dtype=np.int64)


def _check_out_of_range(value: Any) -> str:
    if not isinstance(value, str) or value not in OUT_OF_RANGE:
        raise ValueError(f"out_of_range: expected one of {list(OUT_OF_RANGE)}, got {value!r}")
    return value


def _checked_execution(algo: Algorithm, execution: str | None, options: dict[str, Any] | None) -> Execution:
    """The execution named (the algorithm's own, ``algo.default_execution()``, when None; its default options
    unless ``options`` are given), checked against the algorithm's plans."""
    own, defaults = algo.default_execution()
    if execution is None or execution == own:  # the algorithm's execution: its options unless given ({} = none)
        execution, options = own, {**defaults, **(options or {})}
    made = make_execution(execution, options)
    made.check(algo)
    return made


class _History:
    """The remembered normalized observations, stacked to ``[B, k, S]`` only when a plan reads them (popping an
    action queue needs no stacking)."""

    __slots__ = ("items",)

    def __init__(self, items: Any) -> None:
        self.items = items

    def stacked(self) -> torch.Tensor:
        return torch.stack(list(self.items), dim=1)


__all__ = ["EXECUTIONS", "ObservationError", "Policy", "check_device", "resolve_device"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) picks CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_seed(seed: Any) -> int:
    """``seed`` as an int if it is a whole number in [0, 2**63) (what a torch generator and config.json hold), else a
    ``ValueError`` naming that range."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
        raise ValueError(f"seed: expected an integer in [0, 2**63), got {seed!r}")
    return int(seed)


def check_device(device: str | torch.device | None = "auto") -> torch.device:
    """``resolve_device`` that also checks the device exists here; ``ValueError`` names what is available."""
    try:
        resolved = resolve_device(device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{device!r} is not a device ({err})") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{device!r} asked for CUDA, but this machine has no CUDA device "
                             "(use device=cpu or device=auto)")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"{device!r}: this machine has CUDA devices 0..{count - 1}")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{device!r} asked for Apple's MPS, which this machine or PyTorch build lacks "
                         "(use device=cpu or device=auto)")
    elif resolved.type not in ("cpu", "mps"):
        raise ValueError(f"{device!r}: expected auto, cpu, cuda, cuda:N or mps")
    return resolved


class Policy:
    """A trained planner ready for a control loop.

    Sampler settings live in ``policy.sampling`` and are also attributes: ``policy.sampler = "ddim"``,
    ``policy.steps = 10``, ``policy.guidance_weight = 0.2``; any of them can be overridden per call as keyword
    arguments of :meth:`act` / :meth:`plan`. ``policy.seed`` is where :meth:`reset` restarts the sampler's random
    stream: assigning it takes effect at the next ``reset()`` (or call ``reset(seed=...)``).
    """

    def __init__(
        self,
        algo: Algorithm,
        normalizers: dict[str, Any],
        *,
        env_name: str | None = None,
        sampling: dict[str, Any] | None = None,
        execution: str | None = None,
        execution_options: dict[str, Any] | None = None,
        seed: int = 0,
        metadata: dict[str, Any] | None = None,
        action_bounds: tuple[Any, Any] | None = None,
        out_of_range: str = "warn",
        compile: bool | str = False,
        precision: str = "float32",
    ) -> None:
        self._execution: Execution = _checked_execution(algo, execution, execution_options)
        missing = [k for k in ("observations", "actions") if k not in normalizers]
        if missing:
            raise ValueError(f"Policy needs normalizers for {missing}; got keys {sorted(normalizers)}")
        _check_normalizers(normalizers, algo)
        _check_float32(algo)
        unknown = sorted(set(sampling or {}) - set(algo.sampling_names()))
        if unknown:
            raise ValueError(f"unknown sampling setting(s) {unknown} for {algo.name}; its settings are "
                             f"{algo.sampling_names() or 'none'}")
        # settings this model never reads (a Diffuser without a value net: num_plans, guide_scale...) are left out,
        # whether a config or an artifact gave them, so that setting one later is refused rather than ignored
        unused = algo.unused_settings()
        settings = check_settings({k: v for k, v in {**algo.default_sampling, **(sampling or {})}.items()
                                   if k not in unused}, _schedule_steps(algo))
        try:
            _check_sampler(algo, settings)
        except ValueError as err:
            raise ValueError(f"sampling: {err}") from None
        object.__setattr__(self, "sampling", settings)
        self.algo = algo.eval()
        if "sampler" not in (sampling or {}):
            # steps given without a sampler, for a default sampler that never reads them (Diffuser's DDPM runs its
            # whole schedule): refused, as an assignment or a per-call setting is; given with the sampler (as an
            # artifact keeps them for the others) they are kept, with a warning below
            self._refuse_idle({k: v for k, v in (sampling or {}).items() if v is not None}, settings.get("sampler"),
                              prefix="sampling: ")
        self.normalizers = dict(normalizers)
        self.env_name = env_name
        self.metadata = _check_metadata(metadata)
        self.obs_dim = int(algo.config()["obs_dim"])
        self.act_dim = int(algo.config()["act_dim"])
        self.seed = check_seed(seed)
        self.action_bounds = action_bounds  # checked, with its numpy copy, by the property's setter
        self.stats = {"actions": 0, "clipped_actions": 0}
        """Counts over this policy's life: actions returned by :meth:`act` (rows), and how many of them had to be
        clipped into ``action_bounds``."""
        self.row_stats: dict[str, np.ndarray] = {}
        """Which rows of the last :meth:`act` that returned actions ``stats`` counted: bool arrays ``[B]`` under
        ``"clipped_actions"`` and ``"far_observations"``, so that a caller stepping a batch of environments can
        count only the rows it uses (``evaluate`` leaves out environments whose episode has ended)."""
        self._warned_clip = False
        self.out_of_range = _check_out_of_range(out_of_range)
        """What an observation far outside the training data does (in some dimension beyond ``FAR`` normalized, or
        for a CDF normalizer, which clips, as far outside the data's range as min-max scaling would put that):
        ``"warn"`` (once, counted in ``stats["far_observations"]``), ``"error"`` (a ValueError) or ``"ignore"``."""
        self.stats["far_observations"] = 0
        self._warned_far = False
        self._warned_idle: set[str] = set()  # samplers chosen per call whose idle kept settings were warned about
        self._prepare(compile, precision)
        self.reset()
        self._built = True  # from now on a misspelt public attribute is refused, not silently created
        # settings given with the sampler that it (or the execution) never reads are kept for other samplers, but
        # said; the algorithm's defaults and an artifact's kept settings (Policy.load) are not the caller's words
        given = {k for k, v in (sampling or {}).items() if v is not None}
        self._warn_idle(only=given)
        for key in sorted(given):
            why = self._execution.idle_setting(key)
            if why:
                warnings.warn(f"Policy: {key}={self.sampling[key]!r} has no effect: {why}", UserWarning,
                              stacklevel=2)

    @property
    def action_bounds(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(low, high)`` of the action space (float32 tensors ``[act_dim]``) that :meth:`act` clips actions
        into, or None. Setting it (any two sequences of ``act_dim`` numbers, e.g. ``env.action_space.low`` and
        ``.high``, or None) is checked and applies to numpy and torch actions alike, and :meth:`save` keeps it."""
        return self._action_bounds

    @action_bounds.setter
    def action_bounds(self, value: Any) -> None:
        bounds = _check_bounds(value, self.act_dim)  # refused values change nothing
        object.__setattr__(self, "_action_bounds", bounds)
        object.__setattr__(self, "_bounds_np", None if bounds is None else tuple(b.numpy() for b in bounds))

    def _prepare(self, compile: bool | str, precision: str) -> None:
        """Take the ``compile`` and ``precision`` settings (refused, naming the allowed values) and build the
        prepared denoiser they ask for."""
        resolve_compile(compile, self.algo.device)  # refused now, naming the allowed values
        check_precision(precision)
        denoiser = self._make_denoiser(self.algo.device, compile, precision)  # built first: a refusal changes nothing
        object.__setattr__(self, "_compile", compile)
        object.__setattr__(self, "_precision", precision)
        self._denoiser = denoiser

    @property
    def compile(self) -> bool | str:
        """How the denoiser is prepared per batch size: ``False`` eager; ``"trace"`` traced and frozen by
        TorchScript (less Python and dispatch per network call; what pays on CPU); ``"cuda_graph"`` captured as a
        CUDA graph and replayed (CUDA only); ``"inductor"`` compiled by ``torch.compile`` (and captured like
        ``"cuda_graph"`` on CUDA; its first call per batch size compiles); ``True`` the device's choice
        (``cuda_graph`` on CUDA, ``trace`` elsewhere). The same plans within float tolerance (see
        docs/benchmarks.md for when it pays). Setting it prepares the new path (refused values change nothing).
        A prepared path keeps the weights it was prepared with (a bfloat16 trace holds copies of them): after
        changing ``policy.algo``'s weights, set it again (``policy.compile = policy.compile``)."""
        return self._compile

    @compile.setter
    def compile(self, value: bool | str) -> None:
        self._prepare(value, self._precision)

    @property
    def precision(self) -> str:
        """The denoiser's forward precision: ``"float32"`` or ``"bfloat16"`` (under ``torch.autocast``; plans stay
        float32; pays on GPUs and CPUs with bfloat16 units). Setting it prepares the denoiser anew."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        self._prepare(self._compile, value)

    def _make_denoiser(self, device: torch.device, compile: Any = None, precision: str | None = None) -> Any:
        """The prepared denoiser ``compile`` and ``precision`` (the policy's own when not given) ask for on
        ``device``; None for the plain network. Refused for algorithms that plan without a denoiser (e.g. behaviour
        cloning)."""
        compile = self.compile if compile is None else compile
        precision = self.precision if precision is None else precision
        if compile is False and precision == "float32":
            return None
        if "denoiser" not in self.algo.plan_arguments():
            raise ValueError(f"compile/precision: {self.algo.name} plans without a denoiser; nothing to compile")
        return make_denoiser(self.algo.net, compile, precision, device)

    # -- sampler settings as attributes ---------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        sampling = self.__dict__.get("sampling", {})
        if name in sampling:
            return sampling[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__.get("sampling", {}):
            # refused now, not at the next act(): the value, and the sampler it makes with the other settings
            checked = check_settings({name: value}, _schedule_steps(self.algo))[name]
            if checked is not None:
                self._refuse_idle({name: checked}, self.sampling.get("sampler"))
            _check_sampler(self.algo, {**self.sampling, name: checked})
            self.sampling[name] = checked
            if name == "sampler":
                self._warn_idle()
        elif name == "out_of_range":
            object.__setattr__(self, name, _check_out_of_range(value))
        elif name == "seed":
            object.__setattr__(self, name, check_seed(value))
        elif (name.startswith("_") or not self.__dict__.get("_built") or name in self.__dict__
              or hasattr(type(self), name)):
            object.__setattr__(self, name, value)
        elif "algo" in self.__dict__ and name in self.algo.unused_settings():
            raise AttributeError(f"setting {name} has no effect: {self.algo.unused_settings()[name]}")
        else:  # policy.guidance_weigth = 5 would otherwise be kept and change nothing
            raise AttributeError(f"Policy has no setting {name!r}; {self.algo.name}'s sampling settings are "
                                 f"{sorted(self.sampling) or 'none'}; the policy's own are ['compile', "
                                 "'out_of_range', 'precision', 'seed']")

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: str | torch.device) -> Policy:
        """Move the model to ``device`` (``"auto"`` allowed) and restart the random stream there."""
        try:
            target = check_device(device)
        except ValueError as err:
            raise ValueError(f"device: {err}") from None
        resolve_compile(self.compile, target)  # e.g. a CUDA graph cannot follow the model to the CPU
        self.algo.to(target)
        self._denoiser = self._make_denoiser(target)  # prepared on the old device; True picks the new one's path
        self.reset()
        return self

    # -- control loop ---------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, env_ids: Any = None) -> None:
        """Start a new episode: forget the executed plan (and queued actions) and the observation history, and
        restart the sampler's random stream from the seed.

        ``env_ids`` (indices, or a bool mask over the batch) restarts only those environments of a batch, as a
        vector env that resets finished episodes by itself needs: their remembered observations are replaced by
        the next observation given for them (an episode's start, as training pads it), and the next call
        replans every environment of the batch from its current observation (queued actions and the kept plan
        are dropped; an empty selection changes nothing). The sampler's stream goes on. A planner whose short
        histories are not padded by repeating the first observation (``Algorithm.repeats_first_observation``
        False; every built-in planner pads so) restarts only the whole batch.

        Call it just before the ``act`` that receives an environment's first observation of its new episode:
        with gymnasium's ``AutoresetMode.SAME_STEP`` that is the observation ``step`` returns with ``done``, so
        reset right after that step; with the default ``NEXT_STEP`` the observation returned with ``done`` is
        still the old episode's last (the action chosen for it is ignored) and the next ``step`` returns the new
        episode's first, so reset the environments that were done one step later."""
        if env_ids is not None:
            if seed is not None:
                raise ValueError("reset(seed=..., env_ids=...): a seed restarts the sampler stream of the whole "
                                 "batch; call reset(seed=...) without env_ids")
            self._restart_envs(env_ids)
            return
        if seed is not None:
            self.seed = seed  # checked (by __setattr__) before it is kept: a bad seed changes nothing
        self._device = self.algo.device  # cached: looking it up walks the modules, too slow for every act()
        if getattr(self, "_generator", None) is None or self._generator.device != self._device:
            # one generator per device for the policy's life: a captured CUDA graph draws from this one
            self._generator = torch.Generator(device=self._device)
        self._generator.manual_seed(int(self.seed))
        self._history: deque[torch.Tensor] = deque(maxlen=self.history_length)  # normalized [B, S] each
        self._restart: torch.Tensor | None = None  # [B] bool: environments whose history restarts at next act()
        self._batch: int | None = None  # B of the last act() that returned actions: what env_ids index
        self._execution.reset()

    def _restart_envs(self, env_ids: Any) -> None:
        batch = self._batch  # None before the first act() since reset(): nothing to check the indices against
        ids = np.asarray(env_ids)
        if ids.dtype == np.bool_:
            if ids.ndim != 1 or (batch is not None and ids.shape[0] != batch):
                raise ValueError(f"env_ids: a bool mask must have one entry per environment of the batch "
                                 f"({batch}), got shape {ids.shape}")
            ids = np.flatnonzero(ids)
        if ids.ndim > 1 or ids.dtype.kind not in "iu" and ids.size:
            raise ValueError(f"env_ids: expected indices of environments (or a bool mask), got {env_ids!r}")
        ids = ids.reshape(-1).astype(np.int64)
        if batch is not None and ids.size and not (0 <= ids.min() and ids.max() < batch):
            raise ValueError(f"env_ids: expected indices in [0, {batch}) (the batch the policy is acting on), got "
                             f"{ids.tolist()}")
        if not ids.size:
            return  # reset(env_ids=dones) on a step where none finished: nothing restarts, no plan is dropped
        if self.history_length > 1 and not self.algo.repeats_first_observation:
            raise ValueError(f"reset(env_ids=...): {self.algo.name} with a history of {self.history_length} plans "
                             "from fewer states at an episode's start (repeats_first_observation is False), which "
                             "a batch cannot mix; reset() the whole batch (or use one Policy per environment)")
        self._execution.reset()  # the next call replans the whole batch, the restarted environments included
        if batch is None or self.history_length <= 1 or not self._history or self._history[-1].shape[0] != batch:
            return  # nothing remembered (for this batch) to restart
        mask = torch.zeros(batch, dtype=torch.bool, device=self._device)
        mask[torch.from_numpy(ids).to(self._device)] = True
        self._restart = mask if self._restart is None else self._restart | mask

    @property
    def execution(self) -> str:
        """The name of the execution (see :mod:`diffusion_rl.execution`)."""
        return self._execution.name

    @property
    def execution_options(self) -> dict[str, Any]:
        """The execution's options (e.g. ``{"action_steps": 8}`` for ``action_queue``)."""
        return self._execution.options()

    def set_execution(self, execution: str | None = None, **options: Any) -> None:
        """Change how plans are executed: ``set_execution(action_steps=4)`` keeps the execution and sets Ta = 4;
        ``set_execution("first_action")`` replans at every step (options left out take the execution's
        defaults when it changes). Refused settings change nothing; a change drops the queued actions and the
        kept plan, so the next :meth:`act` plans afresh."""
        name = self.execution if execution is None else execution
        if name == self.execution:
            options = {**self.execution_options, **options}
        self._execution = _checked_execution(self.algo, name, options)
        self._execution.reset()

    @property
    def accepts_goal(self) -> bool:
        """Whether ``act``/``plan`` take a ``goal`` (goal-conditioned planners: a Diffuser built with
        ``goal_conditioned=True``): evaluation passes an env's goal only to policies that do."""
        return self.algo.accepts_goal

    @property
    def history_length(self) -> int:
        """How many recent observations the planner conditions on (the algorithm's ``history``, K; 1 = none)."""
        return int(getattr(self.algo, "history", 1) or 1)

    def _history_with(self, obs_n: torch.Tensor, store: bool) -> torch.Tensor | None:
        """The last ``history_length`` normalized observations ending with ``obs_n`` (``[B, k, S]``, k <= K).

        ``act`` stores the observation (``store=True``); ``plan`` only looks. A new batch size starts afresh.
        Only the stacking is deferred: the returned object is built when a plan actually needs it."""
        k = self.history_length
        if k <= 1:
            return None
        same = bool(self._history) and self._history[-1].shape[0] == obs_n.shape[0]
        kept: Any = self._history if same else []
        if same and self._restart is not None:  # restarted environments start here, padded with this observation
            kept = [torch.where(self._restart[:, None], obs_n, h) for h in self._history]
        if store:
            self._restart = None
            if kept is not self._history:
                self._history.clear()
                self._history.extend(kept)
            self._history.append(obs_n)
            return _History(self._history)
        return _History([*list(kept)[-(k - 1) :], obs_n])

    def act(self, obs: np.ndarray | torch.Tensor, **kwargs: Any) -> np.ndarray | torch.Tensor:
        """Action(s) for one observation ``[obs_dim]`` or a batch ``[B, obs_dim]``; numpy in -> numpy out.

        Keyword arguments: ``goal`` (``[2]``/``[B, 2]`` or a full state, for goal-conditioned planners) and any
        sampler setting (``steps=10``, ``guidance_weight=0.5``...) for this call only; both act through the plan
        this call makes (with ``execution="action_queue"``, a call that pops a queued action makes none: call
        :meth:`reset` first to replan with them at once). For planners conditioned
        on a history of K states (Decision Diffuser ``history=K``) the policy remembers the observations given
        to ``act`` since the last :meth:`reset` and plans from the last K of them. A refused observation or
        setting (a ``ValueError`` before any planning: NaN, a wrong shape, ``steps=0``) changes nothing, the
        queued actions included; a call that fails while planning does not remember its observation and drops
        the kept plan and action queue, so the next call plans afresh.
        """
        obs_n, single, as_numpy, far, raw = self._observe(obs)
        context = self._context(kwargs, obs_n.shape[0])
        context["observation"] = raw  # as given, [B, S]: a normalizer that clips (cdf, quantile) loses what lies out
        # what the history was (K references): a failed call puts it back, whether it appended to it, restarted
        # environments in it or (at a new batch size) replaced it
        before = (list(self._history), self._restart) if self.history_length > 1 else None
        context["history"] = self._history_with(obs_n, store=True)
        try:
            action_n = self._execution.step(self, obs_n, context)
            actions, clipped = self._finish(action_n, single, as_numpy, count=True)
            self._batch = obs_n.shape[0]
            self._count(far, clipped)
            return actions
        except Exception:
            # a failed call leaves nothing behind: its observation (a glitch would condition the next plans of a
            # history-conditioned policy) and its plan (a NaN plan would be warm-started from, or its queued
            # actions popped, by the next calls)
            if before is not None:  # environments restarted for this call are still to restart at the next
                self._history.clear()
                self._history.extend(before[0])
                self._restart = before[1]
            self._execution.reset()
            raise

    def _observe(self, obs: Any, check_range: bool = True
                 ) -> tuple[torch.Tensor, bool, bool, np.ndarray | None, np.ndarray | torch.Tensor]:
        """Checked, normalized observations ``[B, S]`` on the model's device (numpy input is normalized in numpy:
        for one small observation that is several times cheaper than torch's per-op overhead), whether ``obs`` was
        one observation and numpy, which rows lie far outside the training data (None: none, or not checked), for
        the caller to count once it succeeds, and the checked raw observations ``[B, S]``."""
        raw, single, as_numpy = self._check_obs(obs, keep_numpy=True)
        x = self._normalize("observations", raw)
        far = self._check_range(raw, x) if check_range and self.out_of_range != "ignore" else None
        return self._as_model_input(x), single, as_numpy, far, raw

    def _count(self, far: np.ndarray | None, clipped: np.ndarray | None) -> None:
        """Add a successful call's far observations (and, from ``act``, its actions and clipped actions) to
        :attr:`stats`; ``act`` also records them per row in :attr:`row_stats`."""
        if far is not None:
            self.stats["far_observations"] += int(far.sum())
        if clipped is None:
            return
        self.stats["actions"] += clipped.shape[0]
        self.stats["clipped_actions"] += int(clipped.sum())
        self.row_stats = {"clipped_actions": clipped,
                          "far_observations": np.zeros_like(clipped) if far is None else far}

    def _check_range(self, x: Any, x_n: Any) -> np.ndarray | None:
        """Find (and warn once about, or refuse) observations far outside the training data: normalized beyond
        ``FAR`` (for a saturating normalizer such as the CDF, as far outside the data's range as that). Returns
        the rows ``[B]`` that are, None when none is."""
        rows = self.normalizers["observations"].far(x, x_n, FAR).any(-1)
        rows = rows.detach().cpu().numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
        rows = rows.reshape(-1)
        if not rows.any():
            return None
        if self.out_of_range == "error":
            raise ValueError(f"observation far outside the training data (beyond ±{FAR:g} in some dimension on the "
                             "normalized scale); out_of_range='warn' acts anyway")
        if not self._warned_far:
            self._warned_far = True
            warnings.warn(f"Policy: an observation lies far outside the training data (beyond ±{FAR:g} normalized); "
                          "its action is an extrapolation (policy.stats counts them; out_of_range='error' refuses "
                          "them)", RuntimeWarning, stacklevel=4)
        return rows

    def _finish(self, action_n: torch.Tensor, single: bool, as_numpy: bool,
                count: bool = False) -> tuple[Any, np.ndarray | None]:
        """Normalized actions -> raw, finite, bounded actions in the caller's array type and batch layout, and
        (``count``) which rows ``[B]`` had to be clipped."""
        if as_numpy:
            raw = self.normalizers["actions"].unnormalize(action_n.detach().cpu().numpy())
        else:
            raw = self._unnormalize("actions", action_n)
        raw, clipped = self._bounded(raw, count)
        return (raw[0] if single else raw), clipped

    def _bounded(self, action: Any, count: bool = False) -> tuple[Any, np.ndarray | None]:
        """Refuse non-finite actions with their likely causes; clip into ``action_bounds`` (with a warning the
        first time ``act`` does). numpy or torch in, the same out; with ``count``, also the clipped rows ``[B]``
        (for :attr:`stats`), else None."""
        numpy = isinstance(action, np.ndarray)
        if not (np.isfinite(action).all() if numpy else bool(torch.isfinite(action).all())):
            raise ValueError(
                "the policy produced NaN or infinite actions: the observation may lie far outside the training data, "
                "or the artifact's weights or normalizer statistics are not finite"
            )
        rows = action.shape[0] if action.ndim > 1 else 1
        if self.action_bounds is None:
            return action, (np.zeros(rows, dtype=bool) if count else None)
        if numpy:
            low, high = self._bounds_np
            clipped = np.minimum(np.maximum(action, low), high).astype(action.dtype, copy=False)
            where = (clipped != action).reshape(-1, self.act_dim).any(axis=-1) if count else None
        else:
            low, high = (b.to(action.device, action.dtype) for b in self.action_bounds)
            clipped = torch.maximum(torch.minimum(action, high), low)
            where = (clipped != action).reshape(-1, self.act_dim).any(dim=-1).cpu().numpy() if count else None
        if count:
            if where.any() and not self._warned_clip:
                self._warned_clip = True
                warnings.warn(
                    f"Policy: an action outside the action space {self.action_bounds_list()} was clipped into it "
                    "(policy.stats counts them; the observation may lie outside the training data)",
                    RuntimeWarning, stacklevel=3,
                )
        return clipped, where

    def action_bounds_list(self) -> list[list[float]] | None:
        """``[low, high]`` as lists (JSON-ready), or None when the policy has no action bounds."""
        return None if self.action_bounds is None else [b.tolist() for b in self.action_bounds]

    @property
    def expected_next(self) -> torch.Tensor | None:
        """The state ``[B, obs_dim]`` (raw units) that the plan executed by the last :meth:`act` expects next."""
        if self._execution.expected_next is None:
            return None
        return self._unnormalize("observations", self._execution.expected_next)

    def plan_error(self, next_obs: np.ndarray | torch.Tensor, per_dim: bool = False) -> np.ndarray | None:
        """Dynamic consistency of the last :meth:`act`: per environment, the RMS over state dimensions of
        ``normalize(next_obs) - ŝ1`` (the state the executed plan expected next), in normalized units.

        ``next_obs`` is what the simulator returned after the action ``[B, obs_dim]`` (or ``[obs_dim]``).
        ``per_dim=True`` returns the absolute error of every state dimension ``[B, obs_dim]`` instead of its RMS
        (which dimensions the planner gets wrong). None when the last call made no state prediction (behaviour
        cloning, or no :meth:`act` since :meth:`reset`)."""
        expected = self._execution.expected_next
        if expected is None:
            return None
        obs_n = self._observe(next_obs, check_range=False)[0]  # a diagnostic: act() judges observations
        if obs_n.shape[0] != expected.shape[0]:
            raise ValueError(
                f"next_obs: expected {expected.shape[0]} observation(s), one per environment of the last act(); "
                f"got {obs_n.shape[0]}"
            )
        err = obs_n - expected
        err = err.abs() if per_dim else err.pow(2).mean(dim=-1).sqrt()
        return err.detach().cpu().numpy().astype(np.float64)

    def plan(self, obs: np.ndarray | torch.Tensor, **kwargs: Any) -> PlanOutput:
        """The whole plan from ``obs`` in raw units, as the same :class:`PlanOutput` that ``Algorithm.plan``
        returns: ``actions`` (to execute now), ``action_chunk [B?, n, act_dim]`` (the coming steps' actions, when
        the plan has them), ``observations [B?, H, obs_dim]`` and ``next_observations`` (planners only; None for
        action-only policies), ``extras`` (diagnostics). Arrays are numpy or torch as ``obs`` came in, without the
        batch axis for one unbatched observation; ``trajectory`` is None (its columns are in mixed units).

        A look that leaves the control loop as it was: ``obs`` is not added to the history, and the sampler's
        random stream is left where it was, so adding a ``plan`` for a plot or a log does not change the actions
        ``act`` returns afterwards (and ``plan(obs)`` shows the plan the next ``act(obs)`` would make from noise).
        ``obs`` is checked as ``act`` checks it (a far observation is counted in ``stats`` and warned about)."""
        obs_n, single, as_numpy, far, _ = self._observe(obs)
        context = self._context(kwargs, obs_n.shape[0])
        context["history"] = self._history_with(obs_n, store=False)
        stream = self._generator.get_state()
        try:
            out = self._plan_normalized(obs_n, context)
        finally:
            self._generator.set_state(stream)

        def raw(key: str, x: torch.Tensor | None) -> Any:
            return None if x is None else self._output(self._unnormalize(key, x), single, as_numpy)

        def bounded(x: torch.Tensor | None) -> Any:
            return None if x is None else self._finish(x, single, as_numpy)[0]

        plan = PlanOutput(
            actions=bounded(out.actions),
            action_chunk=bounded(out.action_chunk),
            observations=raw("observations", out.observations),
            now=out.now,
            extras={k: self._output(v, single, as_numpy) for k, v in out.extras.items()},
        )
        self._count(far, None)  # a plan returned: its far observations count (it returns no action to count)
        return plan

    # -- internals ------------------------------------------------------------------------------------------
    def _plan_normalized(self, obs_n: torch.Tensor, context: dict[str, Any]) -> PlanOutput:
        settings = {**self.sampling, **context.get("settings", {})}
        if settings.get("clip_sample") == "auto":
            settings["clip_sample"] = auto_clip(type(self.algo), self.normalizers)
        goal = context.get("goal")
        if goal is not None:
            settings["goal"] = goal
        if context.get("history") is not None:
            settings["history"] = context["history"].stacked()
        if self._denoiser is not None:
            settings["denoiser"] = self._denoiser
        warm = context.get("warm_start")  # the execution's previous plan, shifted when asked for
        if warm is not None and settings.get("warm_start_t") is not None:
            history = context.get("history")
            warm = warm(self.algo.plan_now(1 if history is None else len(history.items)))
            if warm.shape[0] == obs_n.shape[0]:
                settings["warm_start"] = warm
        if isinstance(self._denoiser, CUDAGraphDenoiser):  # the whole plan as one graph where it can be captured
            tensors = {"obs": obs_n, **{k: v for k, v in settings.items() if isinstance(v, torch.Tensor)}}
            options = {k: v for k, v in settings.items() if k not in tensors and k != "denoiser"}
            out = self._denoiser.graphed_call(self.algo.plan, tensors, options, self._generator)
            if out is not None:
                return out
        return self.algo.plan(obs_n, generator=self._generator, **settings)

    def _context(self, kwargs: dict[str, Any], batch: int) -> dict[str, Any]:
        if not kwargs:
            return {"settings": {}}
        kwargs = dict(kwargs)
        goal = kwargs.pop("goal", None)
        if goal is not None and not self.algo.accepts_goal:
            raise ValueError(f"goal: {self.algo.name} plans take no goal (goal-conditioned planners: a diffuser "
                             "built with goal_conditioned=True)")
        unknown = [k for k in kwargs if k not in self.sampling]
        if unknown:
            unused = self.algo.unused_settings()
            idle = [k for k in unknown if k in unused]
            if idle:
                raise ValueError(f"setting {idle[0]} has no effect: {unused[idle[0]]}")
            raise ValueError(f"unknown setting(s) {unknown}; this policy's settings are {sorted(self.sampling)}")
        context: dict[str, Any] = {"settings": check_settings(kwargs, _schedule_steps(self.algo))}
        self._refuse_idle({k: v for k, v in context["settings"].items() if v is not None},
                          context["settings"].get("sampler", self.sampling.get("sampler")))
        if {"sampler", "steps", "eta", "warm_start_t"} & set(context["settings"]):  # the sampler this call builds
            _check_sampler(self.algo, {**self.sampling, **context["settings"]})
        chosen = context["settings"].get("sampler")
        if isinstance(chosen, str) and chosen not in self._warned_idle:  # once per sampler: act() runs in loops
            self._warned_idle.add(chosen)
            self._warn_idle(chosen, context["settings"], stacklevel=4)
        if goal is not None:
            context["goal"] = self._goal_state(goal, batch)
        return context

    def _refuse_idle(self, settings: dict[str, Any], sampler: Any, prefix: str = "") -> None:
        """Refuse a setting given now (a keyword of this call, an assignment, or the constructor's ``sampling``
        without a sampler) that ``sampler`` or the execution never reads: ``act(obs, steps=1)`` on DDPM would run
        every step of the schedule as if it were obeyed; ``warm_start_t`` with ``follow_plan`` warm-starts nothing."""
        for key, value in settings.items():  # warm_start_t with an execution that plans once per episode
            why = self._execution.idle_setting(key) if value is not None else None
            if why:
                raise ValueError(f"{prefix}setting {key}={value!r} has no effect: {why}")
        if not isinstance(sampler, str):
            return
        for key in SAMPLER_OPTION_SETTINGS:
            why = idle_sampler_option(sampler, key, _schedule_steps(self.algo)) if key in settings else None
            if why:
                raise ValueError(f"{prefix}setting {key}={settings[key]!r} has no effect: {why}; choose one of "
                                 "those samplers first")

    def _warn_idle(self, sampler: Any = None, given: Any = (), stacklevel: int = 3, only: Any = None) -> None:
        """Warn when a sampler just chosen (``policy.sampler = "ddpm"``, or per call ``act(obs, sampler="ddpm")``)
        leaves kept settings unread (``steps: 10`` kept for the other samplers: each plan now runs the whole
        schedule); settings ``given`` with the sampler in the same call are not kept ones; ``only``: look at these
        settings alone (the constructor's own ``sampling``)."""
        sampler = self.sampling.get("sampler") if sampler is None else sampler
        if not isinstance(sampler, str):
            return
        idle = [(k, idle_sampler_option(sampler, k, _schedule_steps(self.algo))) for k in SAMPLER_OPTION_SETTINGS
                if k not in given and (only is None or k in only) and self.sampling.get(k) not in (None, 0)]
        idle = [(k, why) for k, why in idle if why]
        if idle:
            kept = ", ".join(f"{k}={self.sampling[k]!r}" for k, _ in idle)
            warnings.warn(f"Policy: {kept} kept for other samplers, not read now: "
                          + "; ".join(why for _, why in idle), UserWarning, stacklevel=stacklevel)

    def _goal_state(self, goal: Any, batch: int) -> torch.Tensor:
        """A goal given as positions ``[.., k]`` (k < obs_dim) is padded with zeros to a full state, normalized."""
        expected = f"goal: expected finite real numbers of shape [k] or [{batch}, k] with k <= {self.obs_dim}"
        g = _real_values(goal, expected)
        # float64 goals are normalized in float64, as observations are (not on MPS, which has no float64)
        double = str(g.dtype) in ("float64", "torch.float64") and self.device.type != "mps"
        dtype = torch.float64 if double else torch.float32
        if isinstance(g, np.ndarray):
            with np.errstate(over="ignore", invalid="ignore"):  # too large for float32: refused just below
                g = torch.from_numpy(np.ascontiguousarray(g, dtype=np.float64 if double else np.float32))
        g = g.detach().to(self.device, dtype)
        if not bool((torch.isfinite(g) & (g.abs() <= _F32_MAX)).all()):
            raise ValueError(f"{expected}; it contains NaN or inf, or values beyond float32")
        if g.ndim == 1:
            g = g.expand(batch, -1)
        if g.ndim != 2 or g.shape[0] != batch or g.shape[1] > self.obs_dim:
            raise ValueError(f"{expected}; got shape {tuple(g.shape)}")
        full = torch.zeros(batch, self.obs_dim, device=self.device, dtype=dtype)
        full[:, : g.shape[1]] = g
        return self._as_model_input(self._normalize("observations", full))

    def _check_obs(self, obs: Any, keep_numpy: bool = False) -> tuple[Any, bool, bool]:
        """The one input contract for numpy and torch: real floats or integers (not bool, complex, dates or
        objects), shape ``[obs_dim]`` or ``[B, obs_dim]`` with B >= 1, any strides, finite once cast to float32;
        anything else is a ``ValueError`` naming the expected shape and dtypes."""
        expected = f"expected real floats or integers of shape [{self.obs_dim}] or [B, {self.obs_dim}] with B >= 1"
        checked = _real_values(obs, f"observation: {expected}")
        as_numpy = isinstance(checked, np.ndarray)
        arr, shape = checked, tuple(checked.shape)
        if len(shape) not in (1, 2) or shape[-1] != self.obs_dim or (len(shape) == 2 and shape[0] == 0):
            raise ValueError(f"observation: {expected}; got shape {tuple(shape)}")
        if as_numpy:
            # a contiguous copy when needed (negative strides and views are fine); float64 stays float64 until it
            # is normalized: a signal with a large offset and a small spread (encoder counts, positions in mm)
            # would lose a sizeable part of a standard deviation to float32 rounding before the offset came off
            # (MPS has no float64: there the cast comes first, as before)
            dtype = np.float64 if arr.dtype == np.float64 and self._device.type != "mps" else np.float32
            with np.errstate(over="ignore", invalid="ignore"):  # too large for float32: refused just below
                arr = np.ascontiguousarray(arr, dtype=dtype)
            finite = np.isfinite(arr)
            if dtype == np.float64:  # a float64 of 1e300 is inf as float32 (a float32 cannot lie beyond it)
                finite &= np.abs(arr) <= _F32_MAX
            ok = bool(finite.all())
            if ok and keep_numpy and self._device.type == "cpu":  # callers that normalize in numpy
                return arr.reshape(-1, self.obs_dim), arr.ndim == 1, True
            t = torch.from_numpy(arr)
        else:
            t = obs.detach()
            t = t if t.dtype == torch.float64 and self._device.type != "mps" else t.to(torch.float32)
            finite = torch.isfinite(t)
            if t.dtype == torch.float64:
                finite &= t.abs() <= _F32_MAX
            ok = bool(finite.all())
        if not ok:
            finite = finite.cpu().numpy() if torch.is_tensor(finite) else finite
            rows = np.flatnonzero(~finite.reshape(-1, self.obs_dim).all(axis=-1))
            where = f" in row(s) {rows[:10].tolist()} of the batch" if arr.ndim == 2 else ""
            raise ObservationError(
                f"observation contains NaN or inf, or values beyond float32{where} (expected finite values of shape "
                f"[.., {self.obs_dim}])", rows if arr.ndim == 2 else None)
        single = t.ndim == 1
        return t.reshape(-1, self.obs_dim).to(self._device), single, as_numpy

    def _normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        return self.normalizers[key].normalize(x)

    def _as_model_input(self, x_n: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Normalized observations as the float32 tensor on the model's device the networks take (a float64
        input was normalized in float64); a value beyond float32 once normalized is refused, not turned to inf."""
        if isinstance(x_n, np.ndarray):
            with np.errstate(over="ignore"):
                x32 = torch.from_numpy(np.ascontiguousarray(x_n, dtype=np.float32))
        else:
            x32 = x_n.to(torch.float32)
        double = x_n.dtype == (np.float64 if isinstance(x_n, np.ndarray) else torch.float64)
        if double and not bool(torch.isfinite(x32).all()):
            raise ObservationError("observation lies beyond float32 once normalized (expected values the "
                                   "normalizer maps into float32's range)")
        return x32.to(self._device)

    def _unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        return self.normalizers[key].unnormalize(x)

    @staticmethod
    def _output(x: torch.Tensor, single: bool, as_numpy: bool) -> np.ndarray | torch.Tensor:
        if single:
            x = x[0]
        return x.detach().cpu().numpy() if as_numpy else x

    # -- artifact -------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the artifact (folder with model.safetensors + config.json, or one .safetensors file)."""
        _check_metadata(self.metadata)  # edited since construction: refused before anything is written
        config = {
            "algorithm": self.algo.name,
            "algo_config": self.algo.config(),
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "horizon": self.algo.config().get("horizon"),
            "normalizers": {k: n.state_dict() for k, n in self.normalizers.items()},
            "sampling": self.sampling,
            "execution": self.execution,
            "execution_options": self.execution_options,
            "seed": self.seed,
            "env_name": self.env_name,
            "metadata": self.metadata,
            "action_bounds": self.action_bounds_list(),
            # what wrote it, to trace an artifact that misbehaves months later (never read back as a setting)
            "written_by": {"diffusion_rl": __version__, "torch": torch.__version__},
        }
        return save_artifact(path, self.algo.state_dict(), config)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "auto", compile: bool | str = False,
             precision: str = "float32", out_of_range: str = "warn", execution: str | None = None,
             execution_options: dict[str, Any] | None = None) -> Policy:
        """Load an artifact written by :meth:`save`; needs no Hydra, dataset or pickles. ``compile``,
        ``precision`` and ``out_of_range`` as in the constructor (settings of this process, not of the artifact).
        ``execution`` and ``execution_options`` replace the artifact's (``execution_options={"action_steps": 4}``
        runs a Diffusion Policy at Ta = 4), as :meth:`set_execution` would."""
        try:
            target = check_device(device)  # the caller's choices, refused before reading files
        except ValueError as err:
            raise ValueError(f"device: {err}") from None
        resolve_compile(compile, target)
        check_precision(precision)
        _check_out_of_range(out_of_range)
        state_dict, config = load_artifact(path)
        absent = [k for k in ("algorithm", "algo_config", "normalizers") if k not in config]
        if absent:
            raise ArtifactError(f"{path}: config.json lacks {absent} (expected keys written by Policy.save)")
        _check_config_types(config, path)
        name = config.get("algorithm")
        if name not in ALGORITHMS:
            raise ValueError(f"{path}: unknown algorithm {name!r}; this library knows {sorted(ALGORITHMS)}")
        _check_algo_config(config["algo_config"], path)
        check_network_record(path, config)  # config.json edited after saving: not the model the weights are
        try:
            algo = algorithm_from_config(name, config["algo_config"])
        except (TypeError, ValueError) as err:
            raise ArtifactError(f"{path}: algo_config does not fit the {name} constructor ({err})") from None
        except RuntimeError as err:  # e.g. a width no machine can allocate, in an artifact without a record
            raise ArtifactError(f"{path}: the {name} network that config.json describes cannot be built "
                                f"({str(err)[:200]})") from None
        try:
            missing, unexpected = algo.load_state_dict(state_dict, strict=False)
        except RuntimeError as err:  # shape mismatches raise even with strict=False
            raise ValueError(
                f"{path}: weights do not match the {name} network in config.json ({err})"
            ) from None
        if missing or unexpected:
            raise ValueError(
                f"{path}: weights do not match the {name} network in config.json "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        built = algo.config()
        clash = [f"{k} = {config[k]!r} (algo_config: {built.get(k)!r})" for k in ("obs_dim", "act_dim", "horizon")
                 if k in config and config[k] != built.get(k)]
        if clash:  # the summary keys a reader (or a tool) takes the artifact's sizes from
            raise ArtifactError(f"{path}: config.json: {'; '.join(clash)} disagree with the network it describes")
        algo.to(target)
        if not isinstance(config["normalizers"], dict):
            raise ArtifactError(f"{path}: config.json: normalizers must be an object of normalizer states")
        normalizers = {}
        for key, state in config["normalizers"].items():
            try:
                normalizers[key] = normalizer_from_state(state)
            except (ValueError, TypeError, KeyError, AttributeError) as err:
                raise ArtifactError(f"{path}: config.json: normalizers.{key}: {err}") from None
        check_normalizers_record(path, config)  # valid statistics, but not the ones saved with these weights
        try:
            with warnings.catch_warnings():  # settings the artifact keeps for other samplers are not said again
                warnings.filterwarnings("ignore", message=r"Policy: .*(kept for other samplers|has no effect)",
                                        category=UserWarning)
                policy = cls(
                    algo,
                    normalizers,
                    env_name=config.get("env_name"),
                    sampling=config.get("sampling"),
                    execution=config.get("execution"),  # an artifact without one: the algorithm's own
                    execution_options=config.get("execution_options"),
                    seed=config.get("seed", 0),
                    metadata=config.get("metadata"),
                    action_bounds=config.get("action_bounds"),
                )
        except (ValueError, TypeError) as err:  # settings in config.json this library refuses: name the file
            raise ArtifactError(f"{path}: config.json: {err}") from None
        policy._prepare(compile, precision)  # the caller's settings, not the file's: refused without the path
        policy.out_of_range = out_of_range
        if execution is not None or execution_options is not None:
            if execution_options is not None and not isinstance(execution_options, dict):
                raise ValueError(f"execution_options: expected a dict of options, got {execution_options!r}")
            policy.set_execution(execution, **(execution_options or {}))
        return policy

    def __repr__(self) -> str:
        return (
            f"Policy({self.algo.name}, env={self.env_name!r}, obs_dim={self.obs_dim}, act_dim={self.act_dim}, "
            f"execution={self.execution!r}, sampling={self.sampling})"
        )
