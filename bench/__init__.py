"""`make bench`: the service against a bare Temporal workflow of the same shape, on one server."""
