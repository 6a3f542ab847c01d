"""Sample compute-matched solutions to training problems, grade them, record the budget ledger.

python run_sample.py -m model=smollm2_135m,gemma3_270m budget=low,high
python run_sample.py -m model=gemma2_9b,gemma2_27b dataset=math budget=low,high   # on GPUs
python run_sample.py --cfg job model=gemma2_9b budget=high                        # composed config
"""

import hydra

from compute_optimal.stages.entry import run_stage


@hydra.main(config_path="conf", config_name="sample", version_base="1.3")
def main(cfg) -> dict:
    return run_stage(cfg)  # compute_optimal/stages/sample.py


if __name__ == "__main__":
    main()
