"""Optional parts of tokenauth that build on other libraries (each one an app of its own)."""
