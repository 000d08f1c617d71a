"""HTTP routes: items, search, admin, health. Each module only parses, calls the engine in a
worker thread, and formats the answer."""
