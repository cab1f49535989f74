"""MuJoCo simulation proving ground (ROS-free): Panda tabletop tasks, cameras, experts, perturbations.

Entry points: `TabletopEnv` (env.py), `TASKS` (tasks.py), `make_expert` (experts.py),
`PERTURBATIONS` / `parse_perturbation` (perturbations.py), `run_expert_episode` (rollout.py).

Rendering is headless: MUJOCO_GL defaults to "egl" here, before any submodule imports mujoco
(MuJoCo reads it once, at its first import).
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")
