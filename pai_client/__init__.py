"""PAI's clients: the `pai` command line and the MCP server, both over the HTTP API only."""

__version__ = "0.1.0"
