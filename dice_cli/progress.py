"""Logging and progress. Rank 0 logs to the console and RUN_DIR/train.log and shows tqdm bars; the
other ranks print warnings and errors only, prefixed with their rank."""

from __future__ import annotations

import logging
import os
import time

from tqdm import tqdm

log = logging.getLogger("dice_cli")


class _TqdmConsole(logging.Handler):
    """Console lines that do not tear the progress bar."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record))
        except Exception:
            self.handleError(record)


class Logs:
    """Installs the handlers; close() removes exactly what was installed (the trainer can run in-process).

    The trainer's loggers (dice_cli: progress and messages; dice_trace: tracebacks, file only) do not
    propagate, so a handler someone else put on the root logger never repeats them. ComfyUI logs to the
    root logger: its lines also go to train.log, and its warnings to the console unless the root logger
    already has a handler of its own."""

    def __init__(self, run_dir: str | None, rank: int, world_size: int):
        prefix = f"[rank {rank}] " if world_size > 1 else ""
        root, trace = logging.getLogger(), logging.getLogger("dice_trace")
        had_handlers = bool(root.handlers)
        self._saved = [(lg, lg.level, lg.propagate) for lg in (root, log, trace)]
        self._installed: list[tuple[logging.Logger, logging.Handler]] = []
        for lg in (log, trace):
            lg.setLevel(logging.INFO)
            lg.propagate = False
        console = _TqdmConsole(logging.INFO if rank == 0 else logging.WARNING)
        console.setFormatter(logging.Formatter(prefix + "%(message)s"))
        self._add(log, console)
        if not had_handlers:
            theirs = _TqdmConsole(logging.WARNING if rank == 0 else logging.ERROR)  # not N copies of each warning
            theirs.setFormatter(logging.Formatter(prefix + "%(levelname)s %(name)s: %(message)s"))
            self._add(root, theirs)
        self.path = None
        if run_dir is not None and rank == 0:
            self.path = os.path.join(run_dir, "train.log")
            file = logging.FileHandler(self.path, encoding="utf-8")
            file.setLevel(logging.INFO)
            file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            for lg in (log, trace, root):
                self._add(lg, file)
            if not had_handlers and (root.level > logging.INFO or root.level == logging.NOTSET):
                root.setLevel(logging.INFO)  # ComfyUI's info lines (model type, devices) into train.log
        else:
            self._add(trace, logging.NullHandler())

    def _add(self, logger: logging.Logger, handler: logging.Handler) -> None:
        logger.addHandler(handler)
        self._installed.append((logger, handler))

    def close(self) -> None:
        for logger, handler in self._installed:
            logger.removeHandler(handler)
        for handler in {id(h): h for _, h in self._installed}.values():
            handler.close()
        for logger, level, propagate in self._saved:
            logger.setLevel(level)
            logger.propagate = propagate
        self._installed = []


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """tqdm bars (rank 0) for the teacher, the VAE and the training steps, plus periodic log lines with
    step, loss, steps/s and ETA for train.log."""

    def __init__(self, enabled: bool, show_bars: bool, steps: int, start: int, log_every: int):
        self.enabled, self.show_bars = enabled, show_bars
        self.steps, self.start = steps, start
        self.log_every = log_every or max(1, (steps - start) // 50)
        self.bars: dict[str, tqdm] = {}
        self.t0: float | None = None
        self.window: list[float] = []

    def _bar(self, name: str, total: int, initial: int = 0, unit: str = "it") -> tqdm | None:
        if not (self.enabled and self.show_bars):
            return None
        if name not in self.bars:
            self.bars[name] = tqdm(total=total, initial=initial, desc=name, unit=unit, dynamic_ncols=True, mininterval=0.5)
        return self.bars[name]

    def phase(self, name: str, done: int, total: int) -> None:
        """Teacher sampling or VAE encoding on this rank's block."""
        if not self.enabled:
            return
        bar = self._bar(name, total)
        if bar is not None:
            bar.update(done - bar.n)
        if done == total:
            self._close(name)
            log.info("%s: %d/%d done", name, done, total)

    def step(self, step: int, loss: float) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.t0 is None:  # the first step's time includes warm-up; rates count from its end
            self.t0, self.first = now, step
        self.window.append(loss)
        bar = self._bar("train", self.steps, self.start, unit="step")
        if bar is not None:
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        if step % self.log_every == 0 or step == self.steps:
            rate = (step - self.first) / (now - self.t0) if step > self.first and now > self.t0 else 0.0
            eta = _duration((self.steps - step) / rate) if rate > 0 else "?"
            mean = sum(self.window) / len(self.window)
            log.info("step %d/%d loss %.5f (mean of last %d: %.5f) %.2f steps/s ETA %s", step, self.steps, loss,
                     len(self.window), mean, rate, eta)
            self.window = []
        if step == self.steps:
            self._close("train")

    def _close(self, name: str) -> None:
        bar = self.bars.pop(name, None)
        if bar is not None:
            bar.close()

    def close(self) -> None:
        for name in list(self.bars):
            self._close(name)
