"""psy-agents: distributed hyperparameter search for four ReDSM5 transformer agents."""

__version__ = "0.1.0"
