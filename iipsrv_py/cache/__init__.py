"""Bounded, optional caches: in-process LRUs and (optionally) memcached."""
