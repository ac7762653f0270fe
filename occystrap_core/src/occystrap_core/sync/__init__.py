"""``occystrap sync``: keep mirrors of many images up to date (docs/sync.md).

:mod:`.config` reads and validates the YAML file, :mod:`.rules` selects tags,
:mod:`.plan` lists sources through the listers and shards the work, :mod:`.run`
checks, copies and prunes, :mod:`.events` writes the JSON-lines account, and
:mod:`.command` is the command line.
"""
