"""Protocol handlers: a parsed request in, a Response out, through the shared pipeline."""
