"""Shared package: settings, database, ORM models and the domain logic both the API and the activities call."""
