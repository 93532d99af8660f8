"""Tools beside the plugin (Amazon converter, tiny LLM builder): each imports only what it needs."""
