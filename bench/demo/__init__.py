"""The demo's fixtures: its generated tables and the small digits model it trains."""
