"""Training: the loop (trainer.py), LR schedules, checkpoints and data-parallel setup."""

from hnetbench.train.checkpoint import CheckpointError, load_checkpoint
from hnetbench.train.schedule import lr_factor
from hnetbench.train.trainer import TrainingDiverged, train

__all__ = ["CheckpointError", "TrainingDiverged", "load_checkpoint", "lr_factor", "train"]
