"""Evaluation: closed-loop rollouts under perturbations, offline action error, statistics, reports."""
