"""Environment catalogue, custom MuJoCo tasks and dataset recipes (never imports ``diffusion_rl``)."""

from envs.catalogue import CATALOGUE, EnvSpec, catalogue_names, get_spec, normalized_score

__all__ = ["CATALOGUE", "EnvSpec", "catalogue_names", "get_spec", "normalized_score"]
