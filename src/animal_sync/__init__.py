"""animal-sync: move every animal from the Animals API to its home endpoint, exactly once, with proof."""

__version__ = "0.1.0"
