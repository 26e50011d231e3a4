"""Where inputs enter: each source turns what it reads into Events for the dispatcher."""
