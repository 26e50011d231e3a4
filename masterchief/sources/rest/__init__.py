"""REST pollers: one ``rest`` Event per poll result."""
