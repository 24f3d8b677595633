"""The HTTP API: a thin layer that reads MySQL and starts and messages case workflows."""
