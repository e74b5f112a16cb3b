"""Byte access to images: local files (and object stores) behind one small interface."""
