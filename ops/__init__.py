"""Tooling that runs against a deployment (the invariant checker behind `make check`); shipped in the image,
imported by nothing in the product."""
