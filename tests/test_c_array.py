"""The C source and header pair of `convert --c_array` (sgt_tfmot.tflite.c_array).

Each pair is compiled with the system compilers (gcc as C11, g++ as C++11) and linked into a
tiny program that writes the array back out: the bytes must be the file's, the array 16-byte
aligned, the constants right, and `NAME_ADD_OPS(resolver)` must call the resolver's methods
in order. Skipped where no compiler is installed.
"""

import shutil
import subprocess

import numpy as np
import pytest

from sgt_tfmot.tflite.c_array import c_array_files, c_identifier

C_MAIN = r"""
#include <stdint.h>
#include <stdio.h>
#include "model_data.h"

int main(int argc, char **argv) {
  FILE *out = fopen(argv[1], "wb");
  if (out == NULL || argc != 2) return 2;
  fwrite(model_data, 1, model_data_len, out);
  fclose(out);
  printf("%u %u %u %d %d\n", model_data_len, (unsigned)MODEL_DATA_LEN,
         (unsigned)MODEL_DATA_ARENA_BYTES, MODEL_DATA_OP_COUNT,
         (int)((uintptr_t)model_data % 16));
  return 0;
}
"""

# A stand-in for tflite::MicroMutableOpResolver<N>: records which Add* methods are called.
CPP_MAIN = r"""
#include <cstdint>
#include <cstdio>
#include "model_data.h"

struct Resolver {
  int AddAdd() { std::printf("AddAdd\n"); return 0; }
  int AddConv2D() { std::printf("AddConv2D\n"); return 0; }
  int AddSoftmax() { std::printf("AddSoftmax\n"); return 0; }
};

int main() {
  Resolver resolver;
  MODEL_DATA_ADD_OPS(resolver);
  std::printf("%u %d\n", model_data_len, (int)((std::uintptr_t)model_data % 16));
  return model_data[0];
}
"""

OPS = [("ADD", "AddAdd"), ("CONV_2D", "AddConv2D"), ("SOFTMAX", "AddSoftmax")]


def compiler(name):
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"no {name} on this machine")
    return path


def write_pair(directory, data, source_name="model_data.c"):
    header, source = c_array_files(data, "model_data", OPS, 80_000, 88_064,
                                   description="a test model")  # fmt: skip
    (directory / "model_data.h").write_text(header)
    (directory / source_name).write_text(source)


def test_c_identifier():
    assert c_identifier("model_data") == "model_data"
    assert c_identifier("resnet8-w4a4.int8") == "resnet8_w4a4_int8"
    assert c_identifier("8bit") == "g_8bit"
    with pytest.raises(ValueError, match=r"`name` must be a C identifier\. Received: '8bit'"):
        c_array_files(b"x", "8bit", [], 1, 1)


def test_the_c_pair_compiles_and_holds_the_bytes(tmp_path):
    gcc = compiler("gcc")
    # Every byte value, an odd length (no padding may leak into the array).
    data = bytes(range(256)) * 3 + bytes(np.random.default_rng(0).integers(0, 256, 1001, np.uint8))
    write_pair(tmp_path, data)
    (tmp_path / "main.c").write_text(C_MAIN)
    program = tmp_path / "dump"
    subprocess.run(
        [gcc, "-std=c11", "-Wall", "-Wextra", "-pedantic", "-Werror", "-o", str(program),
         str(tmp_path / "main.c"), str(tmp_path / "model_data.c")],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    result = subprocess.run([str(program), str(tmp_path / "out.bin")], capture_output=True,
                            text=True, check=True, timeout=60)  # fmt: skip
    assert (tmp_path / "out.bin").read_bytes() == data
    # len, LEN, ARENA_BYTES (the margin's figure), OP_COUNT, address modulo 16
    assert result.stdout.split() == [str(len(data)), str(len(data)), "88064", "3", "0"]


def test_the_pair_builds_as_cpp_and_adds_the_ops(tmp_path):
    gxx = compiler("g++")
    data = b"\x1c\x00\x00\x00TFL3" + bytes(40)
    write_pair(tmp_path, data, "model_data.cc")
    (tmp_path / "main.cc").write_text(CPP_MAIN)
    program = tmp_path / "ops"
    subprocess.run(
        [gxx, "-std=c++11", "-Wall", "-Wextra", "-pedantic", "-Werror", "-o", str(program),
         str(tmp_path / "main.cc"), str(tmp_path / "model_data.cc")],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    result = subprocess.run([str(program)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0x1C  # model_data[0], read through the C linkage name
    assert result.stdout.split() == ["AddAdd", "AddConv2D", "AddSoftmax", str(len(data)), "0"]


def test_the_header_says_what_the_firmware_needs():
    header, source = c_array_files(b"\x01\x02\x03", "model_data", OPS, 80_000, 88_064,
                                   description="ResNet-8 W4A4")  # fmt: skip
    assert "#define MODEL_DATA_LEN 3u" in header
    assert "#define MODEL_DATA_ARENA_BYTES 88064u" in header
    assert "#define MODEL_DATA_OP_COUNT 3" in header
    assert "measured\n * 80,000 bytes" in header and "ResNet-8 W4A4" in header
    assert "tflite::MicroMutableOpResolver<MODEL_DATA_OP_COUNT> resolver;" in header
    assert "alignas(16) const unsigned char model_data[] = {\n    0x01, 0x02, 0x03,\n};" in source
    assert '#include "model_data.h"' in source
