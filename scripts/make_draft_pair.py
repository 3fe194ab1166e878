#!/usr/bin/env python3
"""Derives a speculative-decoding target from a quantised GGUF: the same model with its
quantised weight matrices expanded to F16.

The package index holds no two sizes of one model family as GGUF (checked for Qwen, Gemma,
SmolLM, Llama), so this script derives a pair for experiments: the installed SmolLM2-135M-Instruct
Q4_1 file drafts for its F16 expansion (271 MB). The two share the tokenizer exactly and the
draft reads about 2.7x fewer weight bytes per token, but on a CPU where the kernels are
compute-bound the Q4_1 draft is no faster than the F16 target, so the pair shows the mechanics
(high acceptance, identical greedy output), not a speed-up. scripts/setup.sh does not run it;
tests/runtime/speculative_real_model_test.cc uses its output when present.

Usage: scripts/make_draft_pair.py SOURCE.gguf TARGET_F16.gguf
Needs the `gguf` package (scripts/setup.sh installs it into the venv).
"""
import sys

import numpy as np


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    import gguf  # noqa: imported here so the usage text prints without it

    source, target = sys.argv[1], sys.argv[2]
    reader = gguf.GGUFReader(source)
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    writer = gguf.GGUFWriter(target, arch)
    for field in reader.fields.values():
        # The writer adds the architecture and the GGUF.* header fields itself.
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
    expanded = 0
    for tensor in reader.tensors:
        kind = tensor.tensor_type
        if kind in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            writer.add_tensor(tensor.name, np.asarray(tensor.data), raw_dtype=kind)
            continue
        values = gguf.quants.dequantize(tensor.data, kind).astype(np.float16)
        writer.add_tensor(tensor.name, values)
        expanded += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"wrote {target}: {expanded} tensors expanded to F16")


if __name__ == "__main__":
    main()
