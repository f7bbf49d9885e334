"""A .tflite file as a C source and header pair that drops into a firmware project.

TFLite Micro reads the model in place, from flash: firmware compiles the file's bytes in as a
constant array (what `xxd -i model.tflite` prints), 16-byte aligned because the flatbuffer's
buffers are (the schema's `force_align: 16`). `c_array_files` writes that array and, in the
header, what the firmware needs beside it:

    NAME.h  extern const unsigned char NAME[];       the file's bytes
            extern const unsigned int NAME_len;      their count
            #define NAME_LEN ...                     the same count, as a constant
            #define NAME_ARENA_BYTES ...             the tensor arena to reserve
            #define NAME_OP_COUNT ...                N of tflite::MicroMutableOpResolver<N>
            #define NAME_ADD_OPS(resolver) ...       resolver.AddConv2D(); ... for its ops
    NAME.c  alignas(16) const unsigned char NAME[] = {0x1c, 0x00, ...};
            const unsigned int NAME_len = ...;

The source is C11 and C++11 alike (`alignas` from <stdalign.h> in C, a keyword in C++), so
it builds in a C or a C++ firmware project; the names have C linkage either way. A firmware
then writes:

    #include "NAME.h"
    alignas(16) static uint8_t arena[NAME_ARENA_BYTES];
    tflite::MicroMutableOpResolver<NAME_OP_COUNT> resolver;
    NAME_ADD_OPS(resolver);
    tflite::MicroInterpreter interpreter(tflite::GetModel(NAME), resolver, arena, sizeof arena);

Example:

    header, source = c_array_files(flatbuffer, "model_data", [("CONV_2D", "AddConv2D")],
                                   arena_bytes=80_000, arena_bytes_with_margin=88_064)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["SOURCE_SUFFIXES", "c_array_files", "c_identifier"]

SOURCE_SUFFIXES = (".c", ".cc", ".cpp")
"""What the source file of the pair may end in (the header ends in .h)."""

_BYTES_PER_LINE = 12


def c_identifier(stem: str) -> str:
    """The C name of the array for a file stem: characters outside [A-Za-z0-9_] become "_",
    and a leading digit gets a "g_" prefix ("model-w4" -> "model_w4", "8bit" -> "g_8bit")."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", stem)
    return f"g_{name}" if not name or name[0].isdigit() else name


def _hex_lines(data: bytes) -> str:
    rows = []
    for start in range(0, len(data), _BYTES_PER_LINE):
        chunk = data[start : start + _BYTES_PER_LINE]
        rows.append("    " + ", ".join(f"0x{byte:02x}" for byte in chunk) + ",")
    return "\n".join(rows)


def c_array_files(
    flatbuffer: bytes,
    name: str,
    resolver_ops: Sequence[tuple[str, str]],
    arena_bytes: int,
    arena_bytes_with_margin: int,
    *,
    header_name: str | None = None,
    description: str = "",
) -> tuple[str, str]:
    """The header and the source text of the pair.

    Args:
      flatbuffer: The .tflite file's bytes.
      name: The array's C name (`c_identifier`); the macros are its upper case.
      resolver_ops: (op, `MicroMutableOpResolver` method) for each op the file uses
        (`sgt_tfmot.tflite.tflm.resolver_methods`).
      arena_bytes: The arena TFLM's allocator measured.
      arena_bytes_with_margin: What the header tells the firmware to reserve.
      header_name: The header's file name as the source includes it; default NAME.h.
      description: One line about the model, for the header's comment.

    Returns:
      (header, source).
    """
    if c_identifier(name) != name:
        raise ValueError(f"`name` must be a C identifier. Received: {name!r}")
    macro = name.upper()
    header_name = header_name or f"{name}.h"
    guard = re.sub(r"[^A-Z0-9_]", "_", header_name.upper()) + "_"
    methods = [method for _, method in resolver_ops]
    calls = [f"(resolver).{method}();" for method in methods] or ["(void)(resolver);"]
    add_ops = "".join(f"    {call} \\\n" for call in calls)
    about = f" * {description}\n *\n" if description else ""
    header = f"""\
/* {header_name}: a TFLite model as a C array, for TensorFlow Lite Micro.
 * Written by sgt_tfmot.convert --c_array; do not edit.
 *
{about} * Flash: {len(flatbuffer):,} bytes ({name}, 16-byte aligned, read in place).
 * RAM: a tensor arena of {macro}_ARENA_BYTES. TFLite Micro's RecordingMicroAllocator measured
 * {arena_bytes:,} bytes (reference kernels, 64-bit host); {macro}_ARENA_BYTES adds a margin for
 * optimized kernels' scratch buffers. Measure on the device to trim it.
 * Ops: {", ".join(op for op, _ in resolver_ops) or "none"}.
 *
 *   alignas(16) static uint8_t arena[{macro}_ARENA_BYTES];
 *   tflite::MicroMutableOpResolver<{macro}_OP_COUNT> resolver;
 *   {macro}_ADD_OPS(resolver);
 *   tflite::MicroInterpreter interpreter(tflite::GetModel({name}), resolver, arena,
 *                                        sizeof arena);
 */
#ifndef {guard}
#define {guard}

#ifdef __cplusplus
extern "C" {{
#endif

extern const unsigned char {name}[];
extern const unsigned int {name}_len;

#ifdef __cplusplus
}}
#endif

#define {macro}_LEN {len(flatbuffer)}u
#define {macro}_ARENA_BYTES {arena_bytes_with_margin}u
#define {macro}_OP_COUNT {len(methods)}
#define {macro}_ADD_OPS(resolver) \\
  do {{ \\
{add_ops}  }} while (0)

#endif  /* {guard} */
"""
    source = f"""\
/* The bytes of a TFLite model; see {header_name}. Written by sgt_tfmot.convert --c_array. */
#include "{header_name}"

#ifndef __cplusplus
#include <stdalign.h>
#endif

alignas(16) const unsigned char {name}[] = {{
{_hex_lines(flatbuffer)}
}};
const unsigned int {name}_len = {len(flatbuffer)}u;
"""
    return header, source
