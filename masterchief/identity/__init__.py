"""Who someone is: the user table, hostmasks, and the flags a match may carry."""
