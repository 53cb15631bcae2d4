"""``WaypointController``: the scripted expert that made D4RL's maze2d datasets.

Re-implements D4RL's ``waypoint_controller.py``: plan a shortest path over maze cells from the (rounded)
current position to the (rounded) target, place a waypoint in every cell on the way (jittered by U(0, 0.2)
towards negative coordinates, as D4RL did, except the target cell itself), and steer to the current waypoint
with a PD law ``a = clip(p_gain * (waypoint - position) + d_gain * velocity, -1, 1)``. A waypoint counts as
reached within ``solve_thresh``; at the target the controller keeps holding the target position.

D4RL computed the path with 50 sweeps of tabular Q-iteration; a breadth-first search gives the same greedy
path, with ties broken in D4RL's action order (-y, +y, -x, +x).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from envs.maze2d.layouts import WALL, parse_maze

__all__ = ["WaypointController", "shortest_path"]

# D4RL's gridcraft action order (UP, DOWN, LEFT, RIGHT), which decides ties between equally short paths.
_MOVES = ((0, -1), (0, 1), (-1, 0), (1, 0))


def _distances(grid: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """Breadth-first step counts from every open cell to ``target`` (inf for walls and unreachable cells)."""
    dist = np.full(grid.shape, np.inf)
    dist[target] = 0
    queue = deque([target])
    while queue:
        i, j = queue.popleft()
        for di, dj in _MOVES:
            n = (i + di, j + dj)
            if (
                0 <= n[0] < grid.shape[0]
                and 0 <= n[1] < grid.shape[1]
                and grid[n] != WALL
                and np.isinf(dist[n])
            ):
                dist[n] = dist[i, j] + 1
                queue.append(n)
    return dist


def shortest_path(grid: np.ndarray, start: tuple[int, int], target: tuple[int, int]) -> list[tuple[int, int]]:
    """Cells visited after ``start`` up to and including ``target`` (``[target]`` when start == target).

    A ``start`` inside a wall (the rounded position of a point mass touching a wall can be one) first steps
    to its best open neighbour, as D4RL's Q-iteration plan does.
    """
    for name, cell in (("start", start), ("target", target)):
        if not (0 <= cell[0] < grid.shape[0] and 0 <= cell[1] < grid.shape[1]):
            raise ValueError(f"{name} cell {cell} is outside the maze of shape {grid.shape}")
    if grid[target] == WALL:
        raise ValueError(f"target cell {target} is a wall")
    dist = _distances(grid, target)
    if start == target:
        return [target]
    path, cell = [], start
    while cell != target:
        options = [(cell[0] + di, cell[1] + dj) for di, dj in _MOVES]
        options = [n for n in options if 0 <= n[0] < grid.shape[0] and 0 <= n[1] < grid.shape[1]]
        best = min(options, key=lambda n: dist[n])  # min() keeps the first of equal candidates
        if np.isinf(dist[best]) or (grid[cell] != WALL and dist[best] >= dist[cell]):
            raise ValueError(f"no path from cell {start} to cell {target}")
        path.append(best)
        cell = best
    return path


class WaypointController:
    """PD controller following a cell path to a target (D4RL's maze2d expert)."""

    def __init__(
        self,
        maze: str | np.ndarray,
        p_gain: float = 10.0,
        d_gain: float = -1.0,
        solve_thresh: float = 0.1,
        vel_thresh: float = 0.1,
        waypoint_noise: float = 0.2,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        self.grid = parse_maze(maze) if isinstance(maze, str) else np.asarray(maze, dtype=np.int32)
        if self.grid.ndim != 2:
            raise ValueError(f"maze grid must be 2-D [rows, cols], got shape {self.grid.shape}")
        self.p_gain, self.d_gain = float(p_gain), float(d_gain)
        self.solve_thresh, self.vel_thresh = float(solve_thresh), float(vel_thresh)
        self.waypoint_noise = float(waypoint_noise)
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        """Forget the current plan (the next call re-plans)."""
        self._target: np.ndarray | None = None
        self._waypoints: list[np.ndarray] = []
        self._index = 0
        self._prev_location = np.zeros(2)
        self.solved = False

    @property
    def waypoints(self) -> list[np.ndarray]:
        """Waypoints of the current plan (copies)."""
        return [w.copy() for w in self._waypoints]

    @staticmethod
    def _cell(point: np.ndarray) -> tuple[int, int]:
        return int(round(float(point[0]))), int(round(float(point[1])))

    def _plan(self, location: np.ndarray, target: np.ndarray) -> None:
        target_cell = self._cell(target)
        cells = shortest_path(self.grid, self._cell(location), target_cell)
        self._waypoints = [
            np.array(c, dtype=np.float64)
            - (0.0 if c == target_cell else self.rng.uniform(size=2) * self.waypoint_noise)
            for c in cells
        ]
        self._index = 0
        self._prev_location = np.array(self._cell(location), dtype=np.float64)
        self._target = np.array(target_cell, dtype=np.float64)

    def get_action(self, obs: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Action in [-1, 1]^2 for observation ``[x, y, vx, vy]`` and target ``[x, y]``.

        Re-plans when the target moves to another cell; ``self.solved`` tells whether the target is reached
        (within ``solve_thresh`` and nearly at rest), which D4RL's data recipe uses to draw a new target.
        """
        obs = np.asarray(obs, dtype=np.float64)
        target = np.asarray(target, dtype=np.float64)
        if obs.shape != (4,):
            raise ValueError(f"obs must have shape (4,) = [x, y, vx, vy], got shape {obs.shape}")
        if target.shape != (2,):
            raise ValueError(f"target must have shape (2,) = [x, y], got shape {target.shape}")
        location, velocity = obs[:2], obs[2:]
        if self._target is None or np.linalg.norm(self._target - np.array(self._cell(target))) > 1e-3:
            self._plan(location, target)

        moved = np.linalg.norm(self._prev_location - location)
        solved = np.linalg.norm(location - self._target) < self.solve_thresh and moved < self.vel_thresh
        waypoint = self._target if solved else self._waypoints[self._index]
        action = self.p_gain * (waypoint - location) + self.d_gain * velocity
        if (
            not solved
            and np.linalg.norm(location - waypoint) < self.solve_thresh
            and moved < self.vel_thresh
            and self._index < len(self._waypoints) - 1
        ):
            self._index += 1
        self._prev_location = location.copy()
        self.solved = bool(solved)
        return np.clip(action, -1.0, 1.0)
