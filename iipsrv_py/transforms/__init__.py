"""Pure pixel transforms: ndarray in, ndarray out."""
