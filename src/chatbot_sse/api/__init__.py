"""HTTP transport: routes parse and validate, then hand over to the turn service."""
