"""Search: MLflow's filter and order_by grammar for runs and experiments."""

from tracker.search.grammar import (
    Comparison,
    ExperimentComparison,
    ExperimentOrderKey,
    Kind,
    Op,
    OrderKey,
    Value,
    parse_experiment_filter,
    parse_experiment_order_by,
    parse_run_filter,
    parse_run_order_by,
)

__all__ = [
    "Comparison",
    "ExperimentComparison",
    "ExperimentOrderKey",
    "Kind",
    "Op",
    "OrderKey",
    "Value",
    "parse_experiment_filter",
    "parse_experiment_order_by",
    "parse_run_filter",
    "parse_run_order_by",
]
