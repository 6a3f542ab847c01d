"""Fine-tune a student on compute-matched samples (one regime, one sampler's data), with Lightning.

python run_train.py -m regime=self_improvement,weak_to_strong data.sampler=wc,se dataset=arith budget=high
python run_train.py pair=gemma2 regime=knowledge_distillation dataset=math budget=high trainer=deepspeed_zero2
python run_train.py --cfg job regime=weak_to_strong                                # composed config
"""

import hydra

from compute_optimal.stages.entry import run_stage


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg) -> dict:
    return run_stage(cfg)  # compute_optimal/stages/train.py


if __name__ == "__main__":
    main()
