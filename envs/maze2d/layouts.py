"""Maze layouts of D4RL's maze2d tasks and their parsing into a cell grid.

A layout is written row by row, rows separated by a backslash, as in D4RL: ``#`` wall, ``O`` (or space, ``0``)
empty, ``G`` the goal cell. Cell ``(i, j)`` is row ``i``, column ``j`` and is also the point mass's joint
position ``(x, y) = (i, j)`` (D4RL's convention), so positions and cells share one coordinate system.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "EMPTY",
    "GOAL",
    "LARGE_MAZE",
    "LAYOUTS",
    "MEDIUM_MAZE",
    "U_MAZE",
    "WALL",
    "parse_maze",
    "resolve_layout",
]

WALL, EMPTY, GOAL = 10, 11, 12

_TILES = {"#": WALL, "O": EMPTY, "0": EMPTY, " ": EMPTY, "G": GOAL}


def _rows(*rows: str) -> str:
    return "\\".join(rows)


# The three maze2d-*-v1 layouts of D4RL (d4rl/pointmaze/maze_model.py), goal cell marked G.
U_MAZE = _rows(
    "#####",
    "#GOO#",
    "###O#",
    "#OOO#",
    "#####",
)
MEDIUM_MAZE = _rows(
    "########",
    "#OO##OO#",
    "#OO#OOO#",
    "##OOO###",
    "#OO#OOO#",
    "#O#OO#O#",
    "#OOO#OG#",
    "########",
)
LARGE_MAZE = _rows(
    "############",
    "#OOOO#OOOOO#",
    "#O##O#O#O#O#",
    "#OOOOOO#OOO#",
    "#O####O###O#",
    "#OO#O#OOOOO#",
    "##O#O#O#O###",
    "#OO#OOO#OGO#",
    "############",
)
OPEN_MAZE = _rows(
    "#######",
    "#OOOOO#",
    "#OOGOO#",
    "#OOOOO#",
    "#######",
)

LAYOUTS: dict[str, str] = {"umaze": U_MAZE, "medium": MEDIUM_MAZE, "large": LARGE_MAZE, "open": OPEN_MAZE}


def resolve_layout(maze: str) -> str:
    """A layout name (``umaze``, ``medium``, ``large``, ``open``) or a layout string -> the layout string."""
    if maze in LAYOUTS:
        return LAYOUTS[maze]
    if "\\" not in maze:
        raise ValueError(
            f"unknown maze layout {maze!r}; expected one of {sorted(LAYOUTS)} or a layout string "
            "with rows separated by backslashes"
        )
    return maze


def parse_maze(maze: str) -> np.ndarray:
    """Layout name or string -> int32 grid ``[rows, cols]`` of ``WALL``/``EMPTY``/``GOAL``."""
    rows = resolve_layout(maze).strip().strip("\\").split("\\")
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"maze rows must all have the same length, got lengths {[len(r) for r in rows]}")
    grid = np.zeros((len(rows), len(rows[0])), dtype=np.int32)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            if tile not in _TILES:
                raise ValueError(
                    f"unknown maze tile {tile!r} at row {i}, column {j}; expected one of {sorted(_TILES)}"
                )
            grid[i, j] = _TILES[tile]
    if (grid == GOAL).sum() > 1:
        raise ValueError("a maze layout may mark at most one goal cell 'G'")
    return grid
