"""One router per resource: certify/jobs, batches, models, health, metrics."""
