"""Training engine: the train state, the pure train/eval steps, optimizer and schedule, checkpoints, devices."""
from yolojax.engine.optim import Schedule
from yolojax.engine.state import TrainHyper, TrainState, create_train_state, eval_step, train_step

__all__ = ["TrainState", "TrainHyper", "Schedule", "create_train_state", "train_step", "eval_step"]
