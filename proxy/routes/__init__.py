"""The path operations: each streaming route is a request model and a framing over the one
way into a stream (proxy/opening.py)."""
