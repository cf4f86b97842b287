"""Analysis of sweeps: MLflow runs as tidy pandas frames and the paper's figures and tables.

- ``mlflow_loader``: runs (status, job, tag/param filters), metric histories (bulk, cached), table artifacts;
- ``stats``: metric names per eval_k, mean and t interval over seeds, which runs a figure compares;
- ``style``: the one theme, fixed colours per condition, paper sizes, ``save`` (PNG + PDF);
- ``plots``: one function per figure family (schedule, entropy by position, branching, training curves, TIS and
  decay ablations, inference-time scaling, rollout scaling);
- ``tables``: final metrics per condition with confidence intervals, Markdown and LaTeX;
- ``figures``: ``python -m analysis.figures --experiment NAME`` regenerates everything and logs it to MLflow;
- ``training_curves``: ``python -m analysis.training_curves`` (the Pass@k / Worst@k figure of the main command).
"""
