"""Multi-worker training in which only the chief keeps files: its state reaches the others.

Under `tf.distribute.MultiWorkerMirroredStrategy` every worker holds a full copy of the
variables and applies the same all-reduced update, so the copies stay equal. Keras's own
`BackupAndRestore` has *every* worker restore from `backup_dir/chief`, which needs a file
system that all hosts share, and has the other workers write a `workertemp_N` directory into
that same backup directory during each backup. Here the workers need no shared storage:

* the chief writes the backup into its `backup_dir`, the only one that is ever read;
* every other worker gives its own temporary directory as `backup_dir`: its part of each
  backup (all workers must save, since reading a sync-on-read variable is a collective
  operation) goes there and is deleted by Keras right after, and it finds nothing to restore;
* after the restore, `broadcast_from_chief` copies the chief's values (weights, optimizer
  state, BatchNormalization's moving statistics, the epoch and step of the backup) into
  every replica of every worker, so all of them resume at the chief's position with the
  chief's state.

`broadcast_from_chief(strategy, values)` is an all-reduce in which replica 0 (the chief's
first device, see `tf.distribute.MultiWorkerMirroredStrategy`: the chief task, or worker 0
in a cluster without one, holds global replica 0) contributes its values and every other
replica contributes zeros: sum = the chief's values, on every worker. Outside multi-worker
mode it returns the values unchanged.

`report_synchronised_metrics(model)` is the one rule for how a trainer's metric results are
reduced over the replicas (replica 0's: they are synchronised already); every trainer, SGT or
plain, goes through it.
"""

from __future__ import annotations

from collections.abc import Sequence

from sgt_tfmot.keras import keras, tf

__all__ = [
    "ChiefBackupAndRestore",
    "broadcast_from_chief",
    "is_multi_worker",
    "report_synchronised_metrics",
]


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True for a `MultiWorkerMirroredStrategy` over more than one worker."""
    in_multi_worker_mode = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return bool(in_multi_worker_mode is not None and in_multi_worker_mode())


def report_synchronised_metrics(model: keras.Model) -> None:
    """Has `fit` and `evaluate` report `model`'s metrics as they are (every trainer, SGT or not).

    Keras's metric results are synchronised across replicas already: each replica reads the
    value of the global batch. Keras's default reduction of the replicas' results ("auto":
    their sum, except on TPUs) would then report N times the value on N workers; for
    `SaliencyGuidedModel` in `evaluate` too (its test step returns fewer metrics than
    `model.metrics`, so Keras reports the reduced values as they are). "first" keeps replica
    0's result, the global one.
    """
    model.distribute_reduction_method = "first"


def broadcast_from_chief(strategy: tf.distribute.Strategy, values: Sequence) -> list[tf.Tensor]:
    """The chief's `values` (tensors or variables, any numeric dtype), on every worker.

    Every worker must call this with values of the same shapes and dtypes, in the same order
    (it is one collective operation); the non-chief workers' values are ignored.
    """
    tensors = [tf.convert_to_tensor(value) for value in values]
    if not tensors or not is_multi_worker(strategy):
        return tensors

    groups: dict[str, list[int]] = {}  # one all-reduce per dtype (they are packed together)
    for index, tensor in enumerate(tensors):
        groups.setdefault(tensor.dtype.name, []).append(index)

    def keep_replica_0():
        context = tf.distribute.get_replica_context()
        is_first = tf.equal(context.replica_id_in_sync_group, 0)
        mine = [tf.where(is_first, tensor, tf.zeros_like(tensor)) for tensor in tensors]
        reduced = [None] * len(tensors)
        for dtype in sorted(groups):  # the same order on every worker
            indices = groups[dtype]
            sums = context.all_reduce(tf.distribute.ReduceOp.SUM, [mine[i] for i in indices])
            for i, value in zip(indices, sums, strict=True):
                reduced[i] = value
        return reduced

    results = strategy.run(tf.function(keep_replica_0))
    return [strategy.experimental_local_results(result)[0] for result in results]


def _state_variables(model: keras.Model, training_state) -> list[tf.Variable]:
    """The variables a backup restores: the model's, the optimizer's, Keras's counters."""
    optimizer_variables = model.optimizer.variables
    if callable(optimizer_variables):  # the legacy optimizers' method
        optimizer_variables = optimizer_variables()
    candidates = [
        *model.variables,
        *optimizer_variables,
        training_state._ckpt_saved_epoch,
        training_state._ckpt_saved_batch,
        model._train_counter,
    ]
    found, seen = [], set()
    for variable in candidates:
        if id(variable) in seen or _is_accumulator(variable):
            continue
        seen.add(id(variable))
        found.append(variable)
    return found


def _is_accumulator(variable: tf.Variable) -> bool:
    """A sync-on-read sum (a metric's total): per-replica parts, reset each epoch, never restored.

    Sync-on-read means (BatchNormalization's moving statistics) are restored: each replica
    holds its own part, and the backup holds their mean.
    """
    return (
        variable.synchronization == tf.VariableSynchronization.ON_READ
        and variable.aggregation != tf.VariableAggregation.MEAN
    )


def _local_value(strategy: tf.distribute.Strategy, variable: tf.Variable) -> tf.Tensor:
    """`variable`'s value on this worker's first replica, read without a collective.

    Reading a sync-on-read variable as a whole is a collective mean over every worker: on a
    resume it would mix the chief's restored moving statistics with the others' fresh ones.
    """
    return tf.convert_to_tensor(strategy.experimental_local_results(variable)[0])


class ChiefBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` in which only the chief's backup directory is read (module docstring).

    Args:
      backup_dir: On the chief (or alone): the run's backup directory. On every other worker:
        a temporary directory of its own, deleted after the run.
      **kwargs: passed to `keras.callbacks.BackupAndRestore` (`save_freq`, ...).
    """

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)  # the chief restores its backup, if any
        strategy = self.model.distribute_strategy
        if not is_multi_worker(strategy):
            return
        # Restoring created the checkpoint's save counter on the chief (creating a variable is
        # a broadcast); creating it on the others now keeps the collectives in step.
        save_counter = self._training_state.read_checkpoint_manager.checkpoint.save_counter
        variables = [*_state_variables(self.model, self._training_state), save_counter]
        values = broadcast_from_chief(strategy, [_local_value(strategy, v) for v in variables])
        for variable, value in zip(variables, values, strict=True):
            for component in strategy.experimental_local_results(variable):
                component.assign(value)
