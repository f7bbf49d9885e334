"""One worker of a multi-worker run of `sgt_tfmot.training.train` (tests/test_multiworker.py).

    TF_CONFIG=... python tests/helpers/worker_driver.py CONFIG_JSON RECORD_DIR [KILL_AFTER_STEP]

Trains with the settings CONFIG_JSON (`TrainConfig` fields, `distribute="multi_worker"`) and
writes what the test checks into RECORD_DIR, never into the run directory:

  seen.json     {global step: sha1 of every training image this worker's replica trained on,
                 in batch order}, recorded inside the train step (the rows that reach the model)
  weights.npz   the weights of the model this worker saved (arr_0, arr_1, ... in model order)
  metrics.json  what `train` returned on this worker
  started.npz   this worker's own part (its first replica's, read without a collective) of
                each BatchNormalization moving statistic when `fit` starts, after a resume's
                restore (name -> values)

With KILL_AFTER_STEP the worker SIGKILLs itself right after that global step. With
$SGT_TFMOT_TEST_CPU_BFLOAT16 set to 1 or 0, the worker's CPU counts as computing bfloat16
natively or not (`--mixed_precision auto` then resolves as on such a host).
"""

import hashlib
import json
import os
import signal
import sys
from pathlib import Path


def main(config_json: str, record_dir: str, kill_after: str | None = None) -> None:
    import numpy as np

    from sgt_tfmot import precision, training
    from sgt_tfmot.keras import keras, tf
    from sgt_tfmot.trainers import SaliencyGuidedModel
    from sgt_tfmot.training import finalise

    native = os.environ.get("SGT_TFMOT_TEST_CPU_BFLOAT16")
    if native is not None:
        precision.cpu_has_bfloat16 = lambda *args: native == "1"
        precision.gpu_has_bfloat16 = lambda: False
    record = Path(record_dir)
    record.mkdir(parents=True, exist_ok=True)
    seen: dict[int, list[str]] = {}

    def remember(step, images):
        rows = seen.setdefault(int(step) + 1, [])  # the step this batch makes
        rows.extend(hashlib.sha1(row.tobytes()).hexdigest() for row in images.numpy())
        (record / "seen.json").write_text(json.dumps(seen))
        return step

    train_step = SaliencyGuidedModel.train_step

    def recording_train_step(self, data):
        x = data[0]
        step = tf.py_function(remember, [self.optimizer.iterations, x], tf.int64)
        with tf.control_dependencies([step]):
            x = tf.identity(x)
        return train_step(self, (x, *data[1:]))

    SaliencyGuidedModel.train_step = recording_train_step

    save_model = finalise.save_model

    def save_and_record(model, path, overwrite=False):
        save_model(model, path, overwrite=overwrite)
        np.savez(record / "weights.npz", *model.get_weights())

    finalise.save_model = save_and_record

    class RecordStart(keras.callbacks.Callback):  # after the run's callbacks: restored
        def on_train_begin(self, logs=None):
            strategy = self.model.distribute_strategy
            parts = {
                v.name: strategy.experimental_local_results(v)[0].numpy()
                for v in self.model.weights
                if "moving_" in v.name
            }
            np.savez(record / "started.npz", **parts)

    callbacks = [RecordStart()]
    if kill_after is not None:

        class KillAfter(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if int(self.model.optimizer.iterations.numpy()) == int(kill_after):
                    os.kill(os.getpid(), signal.SIGKILL)

        callbacks.append(KillAfter())
    config = training.TrainConfig(**json.loads(config_json))
    metrics = training.train(config, extra_callbacks=callbacks)
    (record / "metrics.json").write_text(json.dumps(metrics))


if __name__ == "__main__":
    main(*sys.argv[1:])
