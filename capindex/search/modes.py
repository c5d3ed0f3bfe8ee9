"""The kinds of search (a module of its own so that the CLI's options load nothing heavy)."""

SEARCH_MODES = ("hybrid", "keyword", "semantic")
