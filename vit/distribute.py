"""Which devices train: one, several on this machine, or several machines.

`select_strategy("multiworker")` is data-parallel training across processes
(usually machines) with `tf.distribute.MultiWorkerMirroredStrategy`: every
worker runs the same `train.py ... --strategy multiworker` with its own
`TF_CONFIG`, e.g. on the first of two:

    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                "task": {"type": "worker", "index": 0}}'

TensorFlow configures collective ops when the strategy is created, which
must happen before any other TF op runs (else "Collective ops must be
configured at program startup"): train.py creates it first thing.

The chief (task "chief", or worker 0 when there is none) is the only worker
that writes: checkpoints, the model folder, the card, the Hub push. Keras 3's
`.keras` save holds layer and optimizer variables only (mirrored: each worker
has them locally), so saving takes no collective and the other workers need
not save anything. On `--resume` the chief reads its checkpoint and sends the
state and every model and optimizer variable to the others
(`broadcast_json`, `sync_from_chief`), so only the chief needs the files.
Creating a variable inside the scope is itself a collective (the chief sends
its initial value), so every worker must create the same variables in the
same order: a checkpoint is loaded outside the scope (Keras' loader creates
variables of its own), never by the chief alone inside it.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import tensorflow as tf

STRATEGIES = ("auto", "mirrored", "default", "multiworker")
TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')


class TFConfigError(ValueError):
    """TF_CONFIG is missing or does not describe this worker; one line, says what to fix."""


def read_tf_config() -> dict:
    """TF_CONFIG, checked: a cluster of chief/worker host:port lists and this task in it."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        raise TFConfigError(f"--strategy multiworker needs TF_CONFIG, e.g. {TF_CONFIG_EXAMPLE}")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TFConfigError(f"TF_CONFIG is not JSON ({exc.msg} at character {exc.pos})") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise TFConfigError(f"TF_CONFIG needs \"cluster\" and \"task\", e.g. {TF_CONFIG_EXAMPLE}")
    jobs = set(cluster) - {"chief", "worker"}
    if jobs:
        raise TFConfigError(f"TF_CONFIG: only chief and worker tasks are supported, not "
                            f"{', '.join(sorted(jobs))}")
    for job, hosts in cluster.items():
        if (not isinstance(hosts, list) or not hosts
                or not all(isinstance(h, str) and h.rpartition(":")[2].isdigit() for h in hosts)):
            raise TFConfigError(f"TF_CONFIG: cluster[{job!r}] must be a list of \"host:port\"")
    if len(cluster.get("chief", [])) > 1:
        raise TFConfigError("TF_CONFIG: at most one chief")
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise TFConfigError(f"TF_CONFIG: task {kind!r} {index!r} is not in the cluster "
                            f"({', '.join(f'{k}: {len(v)}' for k, v in cluster.items())})")
    return config


class _MultiWorkerMirrored(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy whose `reduce` takes what Keras 3 gives it.

    Keras 3.15's TF trainer calls `strategy.reduce("MEAN", (x, y), axis=None)`
    on a first batch (to build the model) and `reduce("MEAN", scalar, axis=0)`
    on every logged metric. MirroredStrategy maps reduce over nests and Keras
    reduces its scalars itself; the multi-worker strategy does neither, so
    `fit` fails before the first step ("Attempt to convert a value (PerReplica
    ...)", keras-team/keras#20585), then on the metrics ("Invalid reduction
    dimension 0 for input with 0 dimensions"). Here each leaf is reduced on
    its own, and a per-replica scalar over the replicas (its mean over axis 0
    is the mean of the replicas' values, as in MirroredStrategy).
    """

    def reduce(self, reduce_op, value, axis):
        base = super().reduce

        def one(v):
            first = v.values[0] if isinstance(v, tf.distribute.DistributedValues) else v
            rank = getattr(getattr(first, "shape", None), "rank", None)
            return base(reduce_op, v, None if rank == 0 else axis)

        return tf.nest.map_structure(one, value)


def select_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Mirrored over all GPUs when there are several (or when asked); multi-worker
    from TF_CONFIG when asked; else the default strategy.

    `mirrored` without GPUs mirrors over the logical CPU devices, which is how
    the tests exercise the multi-device path on a CPU-only machine.
    `multiworker` must be selected before any other TF op runs (see above).
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}")
    if name == "multiworker":
        read_tf_config()
        return _MultiWorkerMirrored()
    if os.environ.get("TF_CONFIG"):
        print(f"note: TF_CONFIG is set but --strategy is {name}: this process trains alone "
              "(use --strategy multiworker to train with the cluster)")
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True when `strategy` spans more than one process."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return sum(len(spec.get(job, [])) for job in ("chief", "worker")) > 1


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes: always, except on the non-chief workers."""
    return bool(strategy.extended.should_checkpoint)


def task_name(strategy: tf.distribute.Strategy) -> str:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return "worker 0"
    return f"{resolver.task_type} {resolver.task_id}"


def broadcast_from_chief(strategy: tf.distribute.Strategy, values: list) -> list[np.ndarray]:
    """The chief's `values` on every worker (each one needs the same shapes and dtypes).

    A sum all-reduce to which only the chief's first replica contributes its
    value and every other replica zeros: exact (x + 0 == x).
    """
    chief = is_chief(strategy)
    out = []
    for value in values:
        value = tf.convert_to_tensor(value)
        calls = []

        def contribution(ctx, value=value, calls=calls):
            calls.append(ctx)
            return value if chief and len(calls) == 1 else tf.zeros_like(value)

        per_replica = strategy.experimental_distribute_values_from_function(contribution)
        out.append(np.asarray(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica,
                                              axis=None)))
    return out


def broadcast_json(strategy: tf.distribute.Strategy, obj):
    """The chief's JSON-able `obj` on every worker (the others pass anything)."""
    data = json.dumps(obj).encode() if is_chief(strategy) else b""
    (size,) = broadcast_from_chief(strategy, [np.int64(len(data))])
    buffer = (np.frombuffer(data, np.uint8).astype(np.int32) if data
              else np.zeros(int(size), np.int32))
    (received,) = broadcast_from_chief(strategy, [buffer])
    return json.loads(received.astype(np.uint8).tobytes())


def _state_variables(model) -> list:
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    return list(model.weights) + list(optimizer.variables)


def sync_from_chief(strategy: tf.distribute.Strategy, model, source=None) -> None:
    """Give every worker the chief's model and optimizer variables.

    Call inside `strategy.scope()` on every worker with the same compiled
    model, built the same way (each variable created there is a collective).
    Builds the optimizer. `source`, on the chief: a model of the same
    structure (a checkpoint loaded outside the scope) whose values to send.
    """
    variables = _state_variables(model)
    values = [v.value for v in (variables if source is None else _state_variables(source))]
    if [tuple(v.shape) for v in values] != [tuple(v.shape) for v in variables]:
        raise ValueError("the checkpoint's variables do not match the model built from its config")
    for variable, value in zip(variables, broadcast_from_chief(strategy, values), strict=True):
        variable.assign(value)


def on_chief(strategy: tf.distribute.Strategy, work) -> int:
    """`work()` (an exit status) on the chief only; every worker returns the chief's status.

    The others wait for it: a worker that exits while the chief still works is
    reported by TensorFlow's coordination service as a crashed task, and the
    cluster's exit statuses should agree (a chief that raises sends 1, then
    raises).
    """
    if not is_multi_worker(strategy):
        return work()
    status = 1
    try:
        status = work() if is_chief(strategy) else 0
    finally:
        status = int(broadcast_json(strategy, status))
    return status


def local_copy(model):
    """The same network and weights outside any strategy (no optimizer), so that
    predicting with it involves no other worker. Call outside `strategy.scope()`."""
    copy = model.__class__.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def weights_digest(model) -> str:
    """sha256 over the weights' shapes, dtypes and bytes: equal digests, equal weights."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        weight = np.ascontiguousarray(weight)
        digest.update(f"{weight.shape}{weight.dtype.str}".encode())
        digest.update(weight.tobytes())
    return digest.hexdigest()
