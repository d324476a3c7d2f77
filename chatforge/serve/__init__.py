"""`chatforge serve`: the OpenAI-compatible API and the chat page (app.py), its engines (scheduler.py)."""
