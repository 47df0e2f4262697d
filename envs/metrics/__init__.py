"""Event-based and segment-based metrics with sed_eval 0.2.1 semantics, vectorized."""
