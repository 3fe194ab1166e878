#!/usr/bin/env python3
"""Writes small, complete GGUF files as the seed corpus of the gguf_fuzz target.

Usage: tests/fuzz/make_gguf_corpus.py [OUT_DIR]   (default: tests/fuzz/corpus/gguf)

Each seed is a valid file covering a different part of the format: every metadata value type,
nested arrays, arrays long enough to stay encoded, version 2, a non-default alignment, several
tensor types and shapes. Written
independently of runtime/gguf.cc so the seeds also cross-check the C++ reader.
"""
import os
import struct
import sys

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
FIXED = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
         BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
# tensor type id -> (block size, bytes per block)
TENSOR_TYPES = {0: (1, 4), 1: (1, 2), 8: (32, 34), 2: (32, 18), 12: (256, 144), 30: (1, 2)}


def string(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def payload(vtype, value):
    if vtype in FIXED:
        return struct.pack(FIXED[vtype], value)
    if vtype == STR:
        return string(value)
    element_type, elements = value
    return (struct.pack("<IQ", element_type, len(elements))
            + b"".join(payload(element_type, e) for e in elements))


def gguf(kvs, tensors, version=3, alignment=32):
    """kvs: [(key, type, value)]; tensors: [(name, type_id, dims, data bytes)]."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, vtype, value in kvs:
        out += string(key) + struct.pack("<I", vtype) + payload(vtype, value)
    offset = 0
    offsets = []
    for name, type_id, dims, data in tensors:
        block, block_bytes = TENSOR_TYPES[type_id]
        n = 1
        for d in dims:
            n *= d
        assert dims[0] % block == 0 and len(data) == n // block * block_bytes, name
        offsets.append(offset)
        out += string(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", type_id, offset)
        offset = (offset + len(data) + alignment - 1) // alignment * alignment
    out += b"\0" * (-len(out) % alignment)
    for (_, _, _, data), off in zip(tensors, offsets):
        out += data + b"\0" * (-len(data) % alignment)
    return out


def f32s(values):
    return b"".join(struct.pack("<f", v) for v in values)


def seeds():
    every_type = [
        ("general.architecture", STR, "llama"),
        ("u8", U8, 200), ("i8", I8, -5), ("u16", U16, 60000), ("i16", I16, -300),
        ("u32", U32, 7), ("i32", I32, -7), ("f32", F32, 0.5), ("bool", BOOL, True),
        ("u64", U64, 1 << 40), ("i64", I64, -(1 << 40)), ("f64", F64, 1e100),
        ("tokens", ARR, (STR, ["<s>", "</s>", "a", "b"])),
        ("scores", ARR, (F32, [0.0, -1.0, -2.0, -3.0])),
    ]
    yield "every_value_type.gguf", gguf(every_type, [
        ("w", 0, [4, 2], f32s(range(8))),
        ("b", 0, [3], f32s([1, 2, 3])),
    ])
    yield "nested_arrays.gguf", gguf([
        ("nested", ARR, (ARR, [(I32, [1, 2, 3]), (STR, ["x"]), (ARR, [(U8, [9])]), (F64, [])])),
    ], [])
    yield "version2.gguf", gguf([("general.name", STR, "v2")],
                                [("t", 0, [4], f32s([1, 2, 3, 4]))], version=2)
    yield "alignment8.gguf", gguf([("general.alignment", U32, 8)], [
        ("a", 0, [1], f32s([1])),
        ("b", 1, [3], b"\x00\x3c" * 3),
        ("c", 0, [2], f32s([5, 6])),
    ], alignment=8)
    yield "quantized.gguf", gguf([("general.architecture", STR, "gemma3"),
                                  ("gemma3.block_count", U32, 1)], [
        ("token_embd.weight", 8, [32, 2], bytes(range(68))),
        ("blk.0.attn_q.weight", 2, [32, 1], bytes(18)),
        ("blk.0.ffn_down.weight", 12, [256, 1], bytes(144)),
        ("output_norm.weight", 30, [4, 1, 1, 1], bytes(8)),
    ])
    # Arrays longer than the reader's 1024-element limit stay encoded in the image.
    yield "long_arrays.gguf", gguf([
        ("tokens", ARR, (STR, [chr(ord("a") + i % 26) * (i % 3) for i in range(1100)])),
        ("types", ARR, (I32, [i % 7 for i in range(1030)])),
        ("flags", ARR, (BOOL, [i % 2 == 0 for i in range(1025)])),
        ("nested", ARR, (ARR, [(U8, list(range(256)) * 5)])),
    ], [])


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus", "gguf")
    os.makedirs(out_dir, exist_ok=True)
    for name, data in seeds():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
