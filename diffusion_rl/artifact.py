"""The on-disk artifact of a trained planner or policy: ``model.safetensors`` + ``config.json``.

A folder holds both files; a single ``.safetensors`` file holds the same config as JSON in its metadata. Loading
needs neither Hydra, nor the dataset, nor pickles, and refuses foreign or damaged files with a clear message.
Writes are atomic: the folder (or file) is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from diffusion_rl.data._atomic import remove_stale

__all__ = [
    "ARTIFACT_FORMAT",
    "FORMAT_VERSION",
    "ArtifactError",
    "check_network_record",
    "check_normalizers_record",
    "load_artifact",
    "recorded_weights_digest",
    "save_artifact",
    "to_jsonable",
    "weights_digest",
]

ARTIFACT_FORMAT = "diffusion_rl.policy"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class ArtifactError(ValueError):
    """A file or folder that is not a readable diffusion_rl artifact."""


def to_jsonable(value: Any) -> Any:
    """Turn numpy/torch values (e.g. normalizer statistics) into JSON-ready Python values."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    return value


def from_jsonable(value: Any) -> Any:
    """Inverse of :func:`to_jsonable`: arrays come back as numpy arrays of their dtype."""
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=value.get("dtype", "float64"))
        return {k: from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    return value


#: the safetensors metadata key of the weights' checksum (artifacts written before it existed have none)
CHECKSUM_KEY = "weights_sha256"
#: the metadata key of the normalizer statistics' checksum in an artifact folder's weights file (config.json holds
#: the statistics; artifacts written before the record existed have none)
NORMALIZERS_KEY = "normalizers_sha256"


def normalizers_digest(normalizers: Any) -> str:
    """SHA-256 of normalizer statistics as config.json records them (arrays in their JSON form, keys sorted)."""
    return hashlib.sha256(json.dumps(to_jsonable(normalizers), sort_keys=True).encode()).hexdigest()


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order: a byte of the weights damaged on
    disk (a bit flip, a bad copy) changes it even where the tensor stays finite and loads."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # the bytes in place, no copy
    return digest.hexdigest()


def _weights_metadata(weights: Path) -> dict[str, str]:
    """The safetensors metadata of a weights file (its header only, no tensors read)."""
    with safe_open(str(weights), framework="pt") as f:
        return f.metadata() or {}


def recorded_weights_digest(path: str | os.PathLike) -> str | None:
    """The weights checksum an artifact (folder or .safetensors file) recorded when it was saved, read from the
    safetensors metadata without loading the tensors: which weights a result was measured with. None for
    artifacts saved before the checksum existed, or a path that is not one."""
    path = Path(path)
    try:
        return _weights_metadata(path / WEIGHTS_NAME if path.is_dir() else path).get(CHECKSUM_KEY)
    except (SafetensorError, OSError, ValueError):
        return None


def _ordinary_permissions(path: Path) -> None:
    """Give a finished temporary file/folder the permissions ``open``/``mkdir`` would (mkstemp's are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
    if path.is_dir():
        for child in path.iterdir():
            os.chmod(child, 0o666 & ~umask)


def _remove(path: Path) -> None:
    """Remove a file, link or folder at ``path`` if there is one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _check_replaceable(path: Path) -> None:
    """Refuse to save over anything but nothing, an empty folder or an artifact folder: a save replaces the whole
    folder, and must not delete a user's other files (``Policy.save("results")``) or a file of the same name."""
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir() or path.is_symlink():
        raise ArtifactError(f"{path} exists and is not a folder; an artifact is saved as a folder (or to a path "
                            "ending in .safetensors): choose another path or remove it")
    others = sorted(p.name for p in path.iterdir() if p.name not in (CONFIG_NAME, WEIGHTS_NAME))
    if others:
        raise ArtifactError(f"{path} holds files that are not an artifact's ({others[:5]}); saving would replace "
                            f"the whole folder: choose another path (expected nothing, an empty folder or a "
                            f"folder of {CONFIG_NAME} and {WEIGHTS_NAME})")


def _check_replaceable_file(path: Path) -> None:
    """Refuse to save a single-file artifact where a folder of that name is (a rename cannot replace a folder with a
    file, and removing it could delete a user's files)."""
    if path.is_dir() and not path.is_symlink():
        raise ArtifactError(f"{path} exists and is a folder; a path ending in .safetensors is saved as one file: "
                            "choose another path or remove the folder")


def save_artifact(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Write weights and config atomically to a folder, or to one file when ``path`` ends in ``.safetensors``."""
    path = Path(path)
    config = {"format": ARTIFACT_FORMAT, "format_version": FORMAT_VERSION, **to_jsonable(config)}
    text = json.dumps(config, indent=2, sort_keys=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    remove_stale(path.parent, f".{path.name}.", ".tmp")  # what killed saves of this artifact left
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        _check_replaceable_file(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"config": text, CHECKSUM_KEY: weights_digest(tensors)})
            _ordinary_permissions(Path(tmp))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path
    _check_replaceable(path)
    tmp_dir = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        # the weights also record what network they are (algorithm and algo_config), so a config.json edited or
        # swapped afterwards is caught on load instead of building a different model around these weights
        network = json.dumps({k: config.get(k) for k in ("algorithm", "algo_config")}, sort_keys=True)
        # ... and so do the normalizer statistics: an edited or damaged digit there scales every observation and
        # action differently from training, silently
        save_file(tensors, str(tmp_dir / WEIGHTS_NAME),
                  metadata={"network": network, CHECKSUM_KEY: weights_digest(tensors),
                            NORMALIZERS_KEY: normalizers_digest(config.get("normalizers"))})
        (tmp_dir / CONFIG_NAME).write_text(text)
        _ordinary_permissions(tmp_dir)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            _remove(old)
            os.replace(path, old)
            try:
                os.replace(tmp_dir, path)
            except OSError:
                os.replace(old, path)  # the previous artifact back in place: a failed save loses nothing
                raise
            _remove(old)
        else:
            os.replace(tmp_dir, path)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)
    return path


def _check_config(config: Any, where: Path) -> dict[str, Any]:
    if not isinstance(config, dict) or config.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(
            f"{where} is not a diffusion_rl artifact: expected a config with format={ARTIFACT_FORMAT!r} "
            "(written by Policy.save or scripts/train_planner.py)"
        )
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ArtifactError(
            f"{where} has artifact format_version={version!r}; this library reads versions 1 to {FORMAT_VERSION}"
        )
    try:
        return from_jsonable(config)
    except (TypeError, ValueError) as err:  # an array record edited by hand: a dtype or values numpy refuses
        raise ArtifactError(f"{where}: config.json holds an array numpy cannot read ({err}); expected the "
                            "records Policy.save writes") from None


#: config.json is small (normalizer statistics included, a few hundred kB for CDF normalizers); a larger one is
#: not ours, and reading it whole could exhaust memory (a link to /dev/zero)
MAX_CONFIG_BYTES = 64 * 1024 * 1024


def _regular_file(path: Path, what: str) -> None:
    """Refuse what is not a regular file (a FIFO would block forever, a device or folder is not an artifact)."""
    try:
        mode = path.stat().st_mode  # follows links: the target must be a regular file
    except OSError as err:
        raise ArtifactError(f"{path}: cannot read the artifact's {what} ({err})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise ArtifactError(f"{path}: the artifact's {what} must be a regular file, got {kind}")


def _read_config_text(path: Path) -> str:
    _regular_file(path, "config")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ArtifactError(f"{path}: {size:,} bytes is too large for an artifact config (at most {MAX_CONFIG_BYTES:,})")
    with open(path, "rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:  # grew while read, or a special file that reports size 0
        raise ArtifactError(f"{path}: too large for an artifact config (at most {MAX_CONFIG_BYTES:,} bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ArtifactError(f"{path} is damaged: not valid JSON ({err})") from None


def _check_finite(state_dict: dict[str, torch.Tensor], where: Path) -> None:
    for name, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ArtifactError(f"{where}: weight {name!r} holds NaN or infinite values (a damaged or diverged model)")


def load_artifact(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``(state_dict, config)`` from an artifact folder or single ``.safetensors`` file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no artifact at {path}: expected a folder with {WEIGHTS_NAME} and {CONFIG_NAME} or a .safetensors file"
        )
    meta: dict[str, str] = {}
    if path.is_dir():
        weights, cfg_file = path / WEIGHTS_NAME, path / CONFIG_NAME
        missing = [p.name for p in (weights, cfg_file) if not p.exists()]
        if missing:
            raise ArtifactError(f"{path} is not a diffusion_rl artifact folder: missing {', '.join(missing)}")
        _regular_file(weights, "weights")
        try:
            config = json.loads(_read_config_text(cfg_file))
        except (json.JSONDecodeError, RecursionError) as err:
            raise ArtifactError(f"{cfg_file} is damaged: not valid JSON ({type(err).__name__}: {err})") from None
        config = _check_config(config, path)
    else:
        weights = path
        _regular_file(path, "file")
        try:
            meta = _weights_metadata(path)
        except (SafetensorError, OSError, ValueError) as err:
            raise ArtifactError(f"{path} is not a readable .safetensors artifact ({err})") from None
        if "config" not in meta:
            beside = Path(path).parent / CONFIG_NAME
            hint = (f"; it is the weights file of the artifact folder {Path(path).parent}: pass the folder"
                    if beside.is_file() else "")
            raise ArtifactError(f"{path} is a safetensors file without a diffusion_rl config in its metadata{hint}")
        try:
            config = _check_config(json.loads(meta["config"]), path)
        except (json.JSONDecodeError, RecursionError) as err:
            raise ArtifactError(f"{path} has a damaged config in its metadata ({err})") from None
    try:
        if path.is_dir():
            meta = _weights_metadata(weights)
        state_dict = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise ArtifactError(f"{weights} is damaged: cannot read its tensors ({err})") from None
    _check_finite(state_dict, weights)
    if CHECKSUM_KEY in meta and weights_digest(state_dict) != meta[CHECKSUM_KEY]:
        raise ArtifactError(f"{weights} is damaged: its tensors do not match the checksum written with them "
                            "(a changed byte, e.g. a bad copy or a failing disk); save or copy the artifact again")
    return state_dict, config


def check_normalizers_record(path: str | os.PathLike, config: dict[str, Any]) -> None:
    """For an artifact folder: compare config.json's normalizer statistics with the checksum its weights file
    recorded at save time (``ArtifactError``: edited or damaged since). Single-file artifacts and artifacts saved
    before the record existed are not checked."""
    path = Path(path)
    if not path.is_dir():
        return
    recorded = _weights_metadata(path / WEIGHTS_NAME).get(NORMALIZERS_KEY)
    if recorded is not None and normalizers_digest(config.get("normalizers")) != recorded:
        raise ArtifactError(
            f"{path / CONFIG_NAME}: its normalizer statistics are not those saved with the weights (edited or "
            "damaged after saving); the policy would scale observations and actions differently from training. "
            "Save or copy the artifact again"
        )


def check_network_record(path: str | os.PathLike, config: dict[str, Any]) -> None:
    """For an artifact folder: compare config.json's algorithm and algo_config with what the weights file recorded
    at save time (``ArtifactError`` listing the differences). Single-file artifacts keep their config inside the
    weights file, and artifacts written before the record existed have none: neither is checked."""
    path = Path(path)
    if not path.is_dir():
        return
    weights = path / WEIGHTS_NAME
    meta = _weights_metadata(weights)
    if "network" not in meta:
        return
    try:
        recorded = from_jsonable(json.loads(meta["network"]))
    except (json.JSONDecodeError, RecursionError):
        raise ArtifactError(f"{weights}: its recorded network description is damaged") from None
    current = {k: config.get(k) for k in ("algorithm", "algo_config")}
    if json.dumps(to_jsonable(current), sort_keys=True) != json.dumps(to_jsonable(recorded), sort_keys=True):
        diffs = []
        old, new = recorded.get("algo_config") or {}, current.get("algo_config") or {}
        if recorded.get("algorithm") != current.get("algorithm"):
            diffs.append(f"algorithm {current.get('algorithm')!r} (weights: {recorded.get('algorithm')!r})")
        if isinstance(old, dict) and isinstance(new, dict):
            diffs += [f"algo_config.{k} = {new.get(k)!r} (weights: {old.get(k)!r})"
                      for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        raise ArtifactError(
            f"{weights.parent / CONFIG_NAME} disagrees with the network its weights were saved with: "
            + ("; ".join(diffs[:5]) or "algo_config differs")
        )
