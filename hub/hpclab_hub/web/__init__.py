"""The hub's own pages and API handlers (the home page, start links, wall-time extension) and their templates."""
