"""Image derivatives with pyvips: decode once, fan out every recipe."""
