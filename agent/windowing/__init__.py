"""Per-asset ring buffers that turn reading streams into fixed-length windows."""
