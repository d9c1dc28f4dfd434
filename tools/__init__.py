"""Repository checks run by `make test` (and so by CI) before the test suite."""
