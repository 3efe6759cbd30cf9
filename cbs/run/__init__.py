"""A training run's parts around its loop (`cbs.train`): the frozen setup built once, resume, the progress record, the step log and the one stop reason."""
