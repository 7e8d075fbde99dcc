# accelerate launch --config_file examples/configs/accelerate/ddp_cpu_2proc.yaml tests/training/ddp_logging_ranks.py train --config ...
"""`llava-hf train` with llava_hf's INFO lines on, each prefixed by the rank that wrote it: what the DDP test reads to
see which rank parsed and checked the data and which reused the first one's caches."""

import logging
import os
import sys

from llava_hf.cli import main

if __name__ == "__main__":
    logging.basicConfig(format=f"rank {os.environ.get('RANK', '?')}: %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("llava_hf").setLevel(logging.INFO)
    sys.exit(main(sys.argv[1:]))
