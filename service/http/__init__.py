"""HTTP: blueprints, the dashboard, the direct decision path, auth, errors, request and response models, metrics."""
