"""Backends start N copies of `launch worker`: local processes, a Slurm array, a k8s Job."""
