"""The server-rendered web UI (Jinja2 templates, a little vanilla JS, no build step)."""
