"""Tasks, one module each; installed as `cab.tasks`. Every module here is imported on the first
registry lookup."""
