"""Runs `sgt_tfmot.training.train` and SIGKILLs itself at a chosen moment (tests/test_resume.py).

    python tests/_kill_driver.py CONFIG_JSON POINT

POINT is one of:
  step:K                 after global step K (between two backups)
  checkpoint_written:N   inside the N-th backup: the checkpoint files are written, the
                         "checkpoint" state file does not point at them yet
  checkpoint_recorded:N  inside the N-th backup: the state file points at the new files,
                         the previous backup is not deleted yet
  model_partial          during finalisation, halfway through writing model.h5
  metrics                during finalisation, before metrics.json is written
  backup                 at the very end, metrics.json written, backup/ not removed yet
"""

import json
import os
import signal
import sys


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def main(config_json: str, point: str) -> None:
    from sgt_tfmot import training
    from sgt_tfmot.keras import keras, tf
    from sgt_tfmot.training import finalise  # what the end of a run calls

    config = training.TrainConfig(**json.loads(config_json))
    kind, _, count = point.partition(":")
    callbacks = []
    if kind == "step":

        class KillAfter(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if int(self.model.optimizer.iterations.numpy()) == int(count):
                    die()

        callbacks.append(KillAfter())
    elif kind in ("checkpoint_written", "checkpoint_recorded"):
        manager = tf.train.CheckpointManager
        name = "_record_state" if kind == "checkpoint_written" else "_sweep"
        original = getattr(manager, name)
        calls = {"n": 0}

        def patched(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == int(count):
                die()
            return original(self, *args, **kwargs)

        setattr(manager, name, patched)
    elif kind == "model_partial":

        def partial_save(model, path, overwrite=False):
            tmp = path.with_name(f".{path.name}.partial{path.suffix}")
            tmp.write_bytes(b"\x89HDF half a file")
            die()

        finalise.save_model = partial_save
    elif kind == "metrics":
        original_write = finalise.atomic_write

        def write(path, content):
            if path.name == "metrics.json":
                die()
            original_write(path, content)

        finalise.atomic_write = write
    elif kind == "backup":
        finalise._remove_backup = lambda backup: die()
    else:
        raise SystemExit(f"unknown point {point!r}")
    training.train(config, extra_callbacks=callbacks)
    raise SystemExit("the run ended without being killed")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
