"""Command-line tools: opid-train, opid-eval, and the main job (python -m opid_train.cli.main)."""
