"""Request parsers, one per protocol.  Pure: request text in, frozen request out."""
