"""The `fnrun` command line: parsing, the commands, and what they print.

`main.main` is the console script and `python -m runtime`; the only place
errors become exit codes. `options` is the grammar, `commands` (and
`inspection`, `invocation`, `logbook`, `scaffold`) the commands, `arguments` what
they share, `views`, `banner`, `listing` and `logs` how they show things.
Only this package imports the supervisor, and nothing imports this package.
"""
