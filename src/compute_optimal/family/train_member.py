"""The child process that trains one family member (``build.train_in_child``): its torch kernels are the
ones its environment pins, read when torch loads here.

    python -m compute_optimal.family.train_member '{"arch": ..., "recipe": ..., "tokenizer": ..., "out": ..., "name": ...}'
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from .build import train

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    spec = json.loads(sys.argv[1])
    train(spec["arch"], spec["recipe"], Path(spec["tokenizer"]), Path(spec["out"]), spec["name"])
