"""schedctl: the command-line tool for boruta's users and admins."""
