"""inferd server."""
