"""Pure routing: request features and the ordered rule list."""
