"""ReDSM5 data: load + validate, criteria, pairs and spans, splits, features, synthetic data."""
