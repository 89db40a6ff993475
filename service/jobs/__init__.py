"""Periodic jobs: refits, promotion, webhooks, leases and the scheduler that runs them."""
