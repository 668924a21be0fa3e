"""The recipes that re-run published studies, each a translation of the study's command line or grid into
rankwise run configurations (the cli/ modules are their argparse layers; their report sections are in report/):

    lr_ratio.py     LoRA Without Regret's LR-ratio study: a learning-rate sweep over ranks, alpha policies and
                    seeds against full fine-tuning, results files in the public reproduction's schema
    placement.py    adaptive-lora-placement's train_adaptive.py / train_baseline.py: per-layer rank formulas
    glue_compat.py  the adaptive LoRA-XS study's run_glue_adaptive.py flags → one learned-rank run per seed
"""
