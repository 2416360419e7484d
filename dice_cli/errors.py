"""Errors the trainer reports as one clear line (no traceback): bad arguments, files, data."""


class CliError(Exception):
    pass


class Terminated(BaseException):
    """SIGTERM (torchrun stops the other ranks this way when one fails). A BaseException, like
    KeyboardInterrupt, so train_refiner checkpoints the last finished step before it propagates."""


class StopAfter(BaseException):
    """--stop-after reached: a BaseException so train_refiner checkpoints the step before it propagates."""

    def __init__(self, step: int):
        super().__init__(step)
        self.step = step
