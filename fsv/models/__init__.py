"""Models: the world ladder fsv pretrains itself, and HF suites by id."""
