"""Temporal activities: everything that touches the database."""
