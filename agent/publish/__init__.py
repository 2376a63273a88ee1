"""Publishing edgewatch's own results to plant systems (Sparkplug B out)."""
