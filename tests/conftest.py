"""Session-scoped fixtures: each tiny trained model of the suite is trained once per run.

The models are shared by several modules, so no test may change them: a test that aligns,
retrains or sets weights works on a copy (`keras.models.clone_model` + `set_weights`).
"""

import functools
import os

# Under pytest-xdist (`-n 2`, the README's command) each worker process gets its share of the
# CPUs for TensorFlow's intra-op threads (inherited by the tools the tests start), instead of
# every worker using them all: two workers on two cores otherwise run four busy threads.
# Before anything imports TensorFlow. A value set by the user is kept.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(max(1, _share)))

import pytest  # noqa: E402

from sgt_tfmot.export import align_biases  # noqa: E402
from tests.helpers.models import (  # noqa: E402
    train_residual_qat,
    train_tiny_mnist_qat,
)


@pytest.fixture(scope="session")
def mnist_qat():
    """The 8-bit QAT tiny MNIST classifier (~3 s of training), biases aligned as
    `python -m sgt_tfmot.train` leaves them at the end of a run."""
    qat = train_tiny_mnist_qat(bits=8)
    align_biases(qat)
    return qat


@pytest.fixture(scope="session")
def mnist_w4a4():
    """The W4A4 QAT tiny MNIST classifier as trained (biases not aligned)."""
    return train_tiny_mnist_qat(bits=4)


@pytest.fixture(scope="session")
def residual_qat():
    """`residual_qat(bits)`: the `bits`-bit QAT residual model trained on RESIDUAL_X, once
    per bit width."""
    return functools.cache(train_residual_qat)


@pytest.fixture
def absl_flags_restored():
    """absl's global FLAGS as before the test: a script of examples/ or benchmarks/ that
    defines its flags there and is loaded in-process (tests/helpers/scripts.py) leaves none
    behind, so another script's flags of the same names can be defined after it."""
    from absl import flags

    defined = set(flags.FLAGS)
    yield
    for name in set(flags.FLAGS) - defined:
        delattr(flags.FLAGS, name)
