"""The benchmark, its load generator and its floor app: tooling, not shipped in the wheel."""
