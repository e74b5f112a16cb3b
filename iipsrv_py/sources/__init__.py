"""Image formats.  Each reads one kind of file and presents it as a tiled pyramid."""
