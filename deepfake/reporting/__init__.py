"""What a person watches and reads: progress lines, the TensorBoard writer and its views, the ROC/PR,
reliability and confusion figures, mask grids, the model summary, `python -m deepfake.plot`, and the
test-set reports (`eval_sets`: evaluate.py's driver and train.py's last step write eval/<set>/ through it).

report.html (`report`, `python -m deepfake.report`) and MODEL_CARD.md (`model_card`) are built here from a run's
files (`run_facts` reads them, `facts` words them, `render` fills the Jinja2 `templates/`).

May import: every room below it (ground, system, runs, data, model, extraction, explain, evaluation). Never
checks, training, prediction or sweeps.
"""
