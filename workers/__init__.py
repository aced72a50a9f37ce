"""Celery app, tasks, the job runner and the model cache."""
