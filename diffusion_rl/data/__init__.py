"""Datasets: Minari, D4RL HDF5 and zarr sources into one ``EpisodeStore``; windows, returns, normalizers."""

from diffusion_rl.data.d4rl_hdf5 import REQUIRED_D4RL_KEYS, d4rl_episode_ends, load_d4rl_hdf5, save_d4rl_hdf5
from diffusion_rl.data.errors import DatasetNotFoundError, make_command
from diffusion_rl.data.minari_io import load_minari, minari_dataset_exists, resolve_minari_root, save_minari
from diffusion_rl.data.normalizers import (
    NORMALIZERS,
    CDFNormalizer,
    GaussianNormalizer,
    MinMaxNormalizer,
    Normalizer,
    QuantileNormalizer,
    make_normalizer,
    normalizer_from_state,
)
from diffusion_rl.data.returns import discounted_values, returns_to_go
from diffusion_rl.data.sequence import RETURN_LABELS, SequenceDataset, window_starts
from diffusion_rl.data.sources import SOURCE_LOADERS, load_episodes, source_kind
from diffusion_rl.data.store import EpisodeStore
from diffusion_rl.data.zarr_store import load_zarr, save_zarr

__all__ = [
    "NORMALIZERS",
    "REQUIRED_D4RL_KEYS",
    "RETURN_LABELS",
    "SOURCE_LOADERS",
    "CDFNormalizer",
    "DatasetNotFoundError",
    "EpisodeStore",
    "GaussianNormalizer",
    "MinMaxNormalizer",
    "Normalizer",
    "QuantileNormalizer",
    "SequenceDataset",
    "d4rl_episode_ends",
    "discounted_values",
    "load_d4rl_hdf5",
    "load_episodes",
    "load_minari",
    "load_zarr",
    "make_command",
    "make_normalizer",
    "minari_dataset_exists",
    "normalizer_from_state",
    "resolve_minari_root",
    "returns_to_go",
    "save_d4rl_hdf5",
    "save_minari",
    "save_zarr",
    "source_kind",
    "window_starts",
]
