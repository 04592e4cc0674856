"""Training: the loop, metrics, checkpoints and the one config every run is built from."""
