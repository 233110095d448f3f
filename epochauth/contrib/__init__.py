"""Optional parts of epochauth that build on other libraries (each one an app of its own)."""
