"""Evaluation-side tasks over finished runs, found by config: one task per run (conf/task/).

python run_eval.py task=data_report dataset=arith                     # WC-vs-SE synthetic-data report
python run_eval.py task=data_report pair=gemma2 dataset=math task.fpr.method=judge   # judge: pair.se
python run_eval.py task=data_report task.fpr.method=human task.export_sheet=true   # label sheet
python run_eval.py task=evaluate model=smollm2_135m dataset=arith                 # a base model's test accuracy
python run_eval.py task=evaluate task.student.regime=self_improvement task.student.sampler=wc  # a student
python run_eval.py task=study_report dataset=arith                                # students on WC vs SE data
python run_eval.py task=study_report "task.seeds=[0,1,2]"                         # each seed, mean ± sd
python run_eval.py task=budget_sweep pair=arith                                   # WC vs SE over budgets
"""

import hydra

from compute_optimal.stages.entry import run_stage


@hydra.main(config_path="conf", config_name="eval", version_base="1.3")
def main(cfg) -> dict:
    return run_stage(cfg)  # compute_optimal/stages/<task.name>.py


if __name__ == "__main__":
    main()
