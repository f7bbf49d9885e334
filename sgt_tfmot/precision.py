"""The compute precision of training: `"auto"` picks mixed_bfloat16 where it is native.

`mixed_bfloat16` (bfloat16 compute, float32 variables) made a ResNet-20 training step about
1.7 times faster on a CPU with AVX-512 BF16 / AMX; on a CPU without them, bfloat16 is
emulated and slower than float32. So `resolve("auto")` chooses:

* `"mixed_bfloat16"` when a GPU with compute capability >= 8.0 is visible, or the CPU
  reports bfloat16 instructions (`avx512_bf16` or `amx_bf16` among the flags of
  /proc/cpuinfo on Linux);
* `"float32"` otherwise, and always for a QAT run below `BF16_MIN_BITS` bits: its k-bit
  activations turn bfloat16's rounding of their inputs (8 bits of mantissa) into level
  flips that compound layer after layer, and the network learns to rely on them. Measured
  on the first 2,000 CIFAR-10 test images (ResNet-20, docs/RESULTS.md): a W2A2 model
  trained in mixed_bfloat16 scored 82.15 % computed in bfloat16 and 23.8 % in float32,
  which is what its saved model and its integer .tflite compute; at W4A4, 91.35 % and
  91.05 %.

Saved models and .tflite files are float32 / integer either way (`sgt_tfmot.saving`).
In a multi-worker run the chief's choice applies to every worker (`sgt_tfmot.training`).
"""

from __future__ import annotations

from pathlib import Path

from sgt_tfmot._checks import check_choice

__all__ = [
    "BF16_MIN_BITS",
    "CHOICES",
    "POLICIES",
    "cpu_has_bfloat16",
    "gpu_has_bfloat16",
    "resolve",
]

CHOICES = ("auto", "mixed_bfloat16", "float32")
POLICIES = ("float32", "mixed_bfloat16")  # what `resolve` returns
BF16_MIN_BITS = 4  # QAT below this many bits trains in float32 under "auto"
_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_CPUINFO = Path("/proc/cpuinfo")


def cpu_has_bfloat16(cpuinfo: Path = _CPUINFO) -> bool:
    """True when the CPU lists native bfloat16 instructions (Linux /proc/cpuinfo)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(_BF16_CPU_FLAGS & set(line.split(":", 1)[-1].split()))
    return False


def gpu_has_bfloat16() -> bool:
    """True when a visible GPU has compute capability >= 8.0 (Ampere and newer)."""
    from sgt_tfmot.keras import tf

    for device in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(device).get("compute_capability")
        if capability and tuple(capability) >= (8, 0):
            return True
    return False


def resolve(choice: str, lowest_bits: int | None = None) -> tuple[str, str]:
    """(Keras policy name, why) for "auto", "mixed_bfloat16" or "float32".

    Args:
      choice: "auto", "mixed_bfloat16" or "float32".
      lowest_bits: The fewest bits of any weight or activation quantizer of the model to
        train (None: a float model).

    Raises:
      InputError: for any other value.
    """
    check_choice(choice, CHOICES, "mixed_precision")
    if choice != "auto":
        return choice, "asked for"
    if lowest_bits is not None and lowest_bits < BF16_MIN_BITS:
        return "float32", (
            f"auto: a {lowest_bits}-bit QAT model trains in float32, the arithmetic its integer "
            "model follows (bfloat16 rounding flips its activation levels)"
        )
    if gpu_has_bfloat16():
        return "mixed_bfloat16", "auto: a GPU with compute capability >= 8.0"
    if cpu_has_bfloat16():
        return "mixed_bfloat16", "auto: the CPU computes bfloat16 natively (AVX-512 BF16 / AMX)"
    return "float32", "auto: no native bfloat16 on this machine"
