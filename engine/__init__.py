"""fanout: render every derivative a catalog needs for every sales channel, decoding once."""

__version__ = "0.1.0"
