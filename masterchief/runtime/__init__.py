"""The runtime: the Component protocol and the composition root that builds every part once."""
