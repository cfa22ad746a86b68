"""Evaluation of synthetic data sets: utility of downstream classifiers (paper S.4)."""
