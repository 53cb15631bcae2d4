"""diffusion_rl: diffusion planners and policies for offline RL and robotics.

``from diffusion_rl import Policy`` is the deployable entry point; it is imported lazily so that
``import diffusion_rl.diffusion`` (the tensor-only core) stays light.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Policy", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Policy":
        try:
            from diffusion_rl.policy import Policy
        except AttributeError as err:  # raised in here it would read "cannot import name 'Policy'", cause lost
            raise ImportError(f"importing diffusion_rl.policy failed: {type(err).__name__}: {err}") from err
        return Policy
    raise AttributeError(f"module 'diffusion_rl' has no attribute {name!r}")
