# accelerate launch --config_file examples/configs/accelerate/ddp_cpu_2proc.yaml tests/training/ddp_failing_rank.py train --config ...
"""`llava-hf train` in which rank 1 raises at the start of its second step while rank 0 runs that step and waits in
its gradient all-reduce: the failure must end the whole run, not leave a rank waiting (the DDP teardown test)."""

import os
import sys

from llava_hf.cli import main
from llava_hf.training import LlavaSFTTrainer

training_step = LlavaSFTTrainer.training_step


def failing_training_step(self, *args, **kwargs):
    if self.state.global_step == 1 and os.environ.get("RANK") == "1":
        raise RuntimeError("injected failure on rank 1")
    return training_step(self, *args, **kwargs)


LlavaSFTTrainer.training_step = failing_training_step

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
