"""Peak memory of two fp32 AdamW training steps on the CPU (test_memory.py compares it with the memory plan).

Run in a fresh process: ``python tests/measure_peak.py <checkpoint> <batch> <seq> <checkpointing 0|1>``;
prints ``{"base", "peak", "delta"}`` in bytes (delta: the growth of the peak resident memory from just
before the model is built). Random weights from the checkpoint's config: the memory is the same.
"""

import json
import resource
import sys

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def resident_bytes() -> int:
    return int(open("/proc/self/statm").read().split()[1]) * 4096


def main() -> None:
    folder, batch, seq, checkpointing = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
    torch.set_num_threads(1)
    config = AutoConfig.from_pretrained(folder)
    base = resident_bytes()
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    if checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, config.vocab_size, (batch, seq))
    for _ in range(2):  # the second step runs with the Adam moments allocated: the peak
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"base": base, "peak": peak, "delta": peak - base}))


if __name__ == "__main__":
    main()
