"""The HTTP side: the one aiohttp server, the API, the web console and event sinks."""
