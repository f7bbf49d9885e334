"""The callbacks of a run's `fit`, besides Keras's own: the PACT α history (alpha.json and the
paper's figure, alpha.png), the wall clock over every attempt (wall_time.json) and the
progress status (`run_callbacks` lists them all, in order)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from sgt_tfmot import quantize
from sgt_tfmot._files import atomic_write
from sgt_tfmot._progress import Progress, duration_text
from sgt_tfmot.keras import keras
from sgt_tfmot.trainers.multi_worker import ChiefBackupAndRestore
from sgt_tfmot.training.config import Plan, Setup
from sgt_tfmot.training.run_directory import RunDirectory


def run_callbacks(
    setup: Setup, run: RunDirectory, model: keras.Model, clock: WallClock, progress: Progress
) -> list[keras.callbacks.Callback]:
    """The backup (resume point), history.csv, TensorBoard, α, the clock and the progress."""
    config = setup.config
    title = (
        f"{config.dataset} {config.model} "
        f"{'SGT + ' if config.sgt else ''}PACT W{config.weight_bits}A{config.activation_bits}"
    )
    return [
        ChiefBackupAndRestore(
            str(run.backup), save_freq=config.backup_every, delete_checkpoint=False
        ),
        keras.callbacks.CSVLogger(str(run.work / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(run.work / "tensorboard"), update_freq="epoch"),
        AlphaHistory(model, run.work, title),
        clock,
        TrainingProgress(progress, setup.plan, config.batch_size, setup.start_step),
    ]


def alphas(model: keras.Model) -> dict[str, float]:
    """Layer name -> current α of every PACT quantizer in `model`."""
    return {name: float(alpha.numpy()) for name, alpha in quantize.pact_alphas(model).items()}


class AlphaHistory(keras.callbacks.Callback):
    """Appends every PACT α after each epoch to `alpha.json` and redraws `alpha.png`."""

    def __init__(self, model_to_watch: keras.Model, out: Path, title: str):
        super().__init__()
        self.watched = model_to_watch
        self.json_path, self.png_path, self.title = out / "alpha.json", out / "alpha.png", title
        self.history = json.loads(self.json_path.read_text()) if self.json_path.exists() else []

    def on_train_begin(self, logs=None):
        if not self.history and alphas(self.watched):  # epoch 0: the initial α₀
            self._record(0)

    def on_epoch_end(self, epoch, logs=None):
        if alphas(self.watched):
            self._record(epoch + 1)

    def _record(self, epoch: int) -> None:
        self.history = [h for h in self.history if h["epoch"] < epoch]
        self.history.append({"epoch": epoch, "alpha": alphas(self.watched)})
        atomic_write(self.json_path, json.dumps(self.history, indent=1).encode())
        plot_alphas(self.history, self.png_path, self.title)


def plot_alphas(history: list[dict], path: Path, title: str) -> None:
    """The paper's Figures 1 and 2: α of each PACT layer against the epoch."""
    import io

    import matplotlib.ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    names = list(history[-1]["alpha"])
    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    colors = matplotlib.colormaps["viridis"](
        [i / max(len(names) - 1, 1) for i in range(len(names))]
    )
    labelled = set(names) if len(names) <= 12 else {names[0], names[len(names) // 2], names[-1]}
    for name, color in zip(names, colors, strict=True):
        axis.plot(epochs, [h["alpha"].get(name, float("nan")) for h in history], color=color,
                  marker="o" if len(epochs) < 15 else None, lw=1.2,
                  label=name if name in labelled else None)  # fmt: skip
    axis.set_xlabel("epoch")
    axis.set_ylabel("PACT clipping level α")
    axis.set_title(
        f"{title}\n{len(names)} PACT layers, colour from first (purple) to last (yellow)"
    )
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    atomic_write(path, buffer.getvalue())


class WallClock(keras.callbacks.Callback):
    """Training wall time over every attempt of a run, kept in `wall_time.json`.

    The file is rewritten at most once a second during training, so an attempt that is
    killed loses at most about a second of its time.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        saved = json.loads(path.read_text()) if path.exists() else {}
        self.previous = float(saved.get("seconds", 0.0))
        self.attempts = int(saved.get("attempts", 0)) + 1
        self.start = time.monotonic()
        self.last_saved = -math.inf
        self.save(force=True)

    def seconds(self) -> float:
        return self.previous + time.monotonic() - self.start

    def save(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_saved >= 1.0:
            self.last_saved = now
            content = {"seconds": round(self.seconds(), 3), "attempts": self.attempts}
            atomic_write(self.path, json.dumps(content).encode())

    def on_train_batch_end(self, batch, logs=None):
        self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.save(force=True)


class TrainingProgress(keras.callbacks.Callback):
    """Keeps the run's progress status (`sgt_tfmot._progress`) where training stands: the
    global step, images per second since the first step of this attempt (its tracing
    excluded), and the time left at that rate. In a log the heartbeat prints it at least
    every 30 s; Keras's own lines come once per epoch only."""

    def __init__(self, progress: Progress, plan: Plan, batch_size: int, start_step: int):
        super().__init__()
        self.progress, self.plan = progress, plan
        self.batch_size, self.start_step = batch_size, start_step
        self.done, self.first = 0, None

    def on_train_begin(self, logs=None):
        self.progress.update(
            f"step {self.start_step}/{self.plan.total_steps}: building and tracing the "
            "training step", live=False,
        )  # fmt: skip

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        now = time.monotonic()
        if self.first is None:
            self.first = (now, self.done)
        step = min(self.start_step + self.done, self.plan.total_steps)
        epoch = min(step // self.plan.steps_per_epoch + 1, self.plan.epochs)
        status = f"step {step}/{self.plan.total_steps} (epoch {epoch}/{self.plan.epochs})"
        seconds, steps = now - self.first[0], self.done - self.first[1]
        if steps > 0 and seconds > 0:
            rate = steps * self.batch_size / seconds
            left = (self.plan.total_steps - step) * seconds / steps
            status += f": {rate:.1f} images/s, ETA {duration_text(left)}"
        self.progress.update(status)

    def on_test_begin(self, logs=None):
        step = min(self.start_step + self.done, self.plan.total_steps)
        self.progress.update(
            f"step {step}/{self.plan.total_steps}: evaluating on the test split", live=False
        )
