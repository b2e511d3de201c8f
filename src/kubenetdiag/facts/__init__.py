"""Facts: the parsed, typed view of what the collectors saw."""
