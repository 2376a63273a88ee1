"""Reports an engineer puts on a slide: one asset's history, or the fleet's health."""
