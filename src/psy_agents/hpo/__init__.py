"""HPO engine: storage, study specs, search spaces, stages, the objective and the worker."""
