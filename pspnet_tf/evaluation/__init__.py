"""Scoring segmentation: the confusion-matrix metric, whole-dataset evaluation and the
per-class IoU table; used by training (validation), evaluate.py and the tests alike."""
