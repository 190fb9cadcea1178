"""HTTP routers, one module per resource; routes are thin and call service objects."""
