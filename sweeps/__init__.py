"""Sweeps: YAML specs expanded into runs, executed locally or on Slurm, resumable and lock-safe."""
