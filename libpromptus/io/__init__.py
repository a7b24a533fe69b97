"""Video in and out (PyAV), the names of the standard streams, and files written whole (temporaries, locks, renames)."""
