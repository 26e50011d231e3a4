"""The IRC transport: the pydle client, the line translator, pacing and storm folding."""
