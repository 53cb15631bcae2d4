"""Suite-wide settings: one torch thread per test process.

The suite runs on 2-core CI machines next to MuJoCo and subprocesses; the small networks in the tests gain nothing
from intra-op threads, and oversubscribed threads slow them down by orders of magnitude on a loaded machine.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

torch.set_num_threads(1)
