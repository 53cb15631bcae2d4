"""diffusion_rl: diffusion planners and policies for offline RL and robotics."""

__version__ = "0.1.0"
