"""Token core tests (a package, so its conftest and helpers keep their own module names)."""
