"""Telling others that a job ended: webhooks and a command per profile (docs/webhooks.md)."""
