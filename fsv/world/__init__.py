"""The embedded synthetic world: symbols with features, tasks that read a feature through a label
permutation, two description languages, a pretraining corpus and the exact Bayes-optimal reference."""

from fsv.world.config import PRESETS, WorldConfig, preset
from fsv.world.world import Task, World

__all__ = ["PRESETS", "Task", "World", "WorldConfig", "preset"]
