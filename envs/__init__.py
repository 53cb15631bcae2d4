"""Environment catalogue, custom MuJoCo tasks and dataset recipes (never imports ``diffusion_rl``)."""

from envs.arm import ARM_IDS  # importing registers the arm tasks' gym ids (Meta-World loads on first make)
from envs.catalogue import CATALOGUE, EnvSpec, catalogue_names, get_spec, normalized_score
from envs.maze2d import MAZE2D_IDS, Maze2DEnv, WaypointController  # importing registers the Maze2D-* gym ids
from envs.obstacle import register_obstacle  # importing registers PointObstacle-v0
from envs.tasks import TASKS, TaskSpec, get_task, task_names

__all__ = [
    "ARM_IDS",
    "CATALOGUE",
    "MAZE2D_IDS",
    "TASKS",
    "EnvSpec",
    "Maze2DEnv",
    "TaskSpec",
    "WaypointController",
    "catalogue_names",
    "get_spec",
    "get_task",
    "normalized_score",
    "register_obstacle",
    "task_names",
]
