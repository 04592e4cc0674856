"""The ``launch`` command line: one thin module per command (see ``main.COMMANDS``)."""
