"""Running the service: gunicorn, a background server for scripts, the demo."""
