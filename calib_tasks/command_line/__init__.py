"""What calib-report, calib-study and calib-tune share on the command line: their exit statuses,
their argument types, and arguments made from a dataclass's fields (``conventions``)."""
