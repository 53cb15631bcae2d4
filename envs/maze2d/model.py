"""The MuJoCo model of D4RL's point maze, built from a layout.

Same physics as D4RL's ``point_maze`` (d4rl/pointmaze/maze_model.py): a sphere of radius 0.1 and density 1000
on two slide joints (damping 1) in a plane without gravity, timestep 0.01, Euler integrator, motors with gear
100 and control range [-1, 1], and a 1x1x0.4 box per wall cell centred at ``(i + 1, j + 1)``. The point mass's
body sits at ``(1.2, 1.2)``, so a joint position ``(x, y)`` is the world point ``(x + 1.2, y + 1.2)`` --
D4RL's offset, kept so that positions, rewards and reference scores match its datasets.
"""

from __future__ import annotations

import numpy as np

from envs.maze2d.layouts import WALL

__all__ = ["BODY_OFFSET", "POINT_MASS_PHYSICS", "maze_xml"]

BODY_OFFSET = np.array([1.2, 1.2])
"""World position of the point mass when its joint position is ``(0, 0)``."""

POINT_MASS_PHYSICS = """  <compiler inertiafromgeom="true" angle="radian"/>
  <option timestep="0.01" gravity="0 0 0" iterations="20" integrator="Euler"/>
  <default>
    <joint damping="1" limited="false"/>
    <geom friction=".5 .1 .1" density="1000" margin="0.002" condim="1" contype="2" conaffinity="1"/>
  </default>
"""
"""D4RL's point-mass physics (compiler, 0.01 s Euler steps without gravity, joint damping, geom defaults), shared
by every point-mass task of ``envs``."""

_HEADER = """<mujoco model="point_maze">
""" + POINT_MASS_PHYSICS + """  <asset>
    <texture type="2d" name="groundplane" builtin="checker" rgb1="0.2 0.3 0.4" rgb2="0.1 0.2 0.3"
             width="100" height="100"/>
    <texture name="skybox" type="skybox" builtin="gradient" rgb1=".4 .6 .8" rgb2="0 0 0"
             width="800" height="800" mark="random" markrgb="1 1 1"/>
    <material name="groundplane" texture="groundplane" texrepeat="20 20"/>
    <material name="wall" rgba=".7 .5 .3 1"/>
    <material name="target" rgba=".6 .3 .3 1"/>
  </asset>
  <visual>
    <headlight ambient=".4 .4 .4" diffuse=".8 .8 .8" specular="0.1 0.1 0.1"/>
    <map znear=".01"/>
    <quality shadowsize="2048"/>
  </visual>
  <worldbody>
    <geom name="ground" size="40 40 0.25" pos="0 0 -0.1" type="plane" contype="1" conaffinity="0"
          material="groundplane"/>
    <body name="particle" pos="{bx} {by} 0">
      <geom name="particle_geom" type="sphere" size="0.1" rgba="0.0 0.0 1.0 0.0" contype="1"/>
      <site name="particle_site" pos="0 0 0" size="0.2" rgba="0.3 0.6 0.3 1"/>
      <joint name="ball_x" type="slide" pos="0 0 0" axis="1 0 0"/>
      <joint name="ball_y" type="slide" pos="0 0 0" axis="0 1 0"/>
    </body>
    <site name="target_site" pos="0 0 0" size="0.2" material="target"/>
"""

_FOOTER = """  </worldbody>
  <actuator>
    <motor joint="ball_x" ctrlrange="-1.0 1.0" ctrllimited="true" gear="100"/>
    <motor joint="ball_y" ctrlrange="-1.0 1.0" ctrllimited="true" gear="100"/>
  </actuator>
</mujoco>
"""


def maze_xml(grid: np.ndarray) -> str:
    """MJCF text of the point maze for a parsed layout grid (see ``layouts.parse_maze``)."""
    walls = [
        f'    <geom conaffinity="1" type="box" name="wall_{i}_{j}" material="wall" '
        f'pos="{i + 1.0} {j + 1.0} 0" size="0.5 0.5 0.2"/>\n'
        for i, j in zip(*np.nonzero(grid == WALL))
    ]
    header = _HEADER.replace("{bx}", str(BODY_OFFSET[0])).replace("{by}", str(BODY_OFFSET[1]))
    return header + "".join(walls) + _FOOTER
