"""Evaluation: the paper's tables and figure, detection statistics, and the report."""
