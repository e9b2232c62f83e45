"""The web routes, one module per area. Thin: parse, call a service, render."""
