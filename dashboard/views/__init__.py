"""One module per page: ``render(ctx)`` draws it; the routes call ``page()``."""
