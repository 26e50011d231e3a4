"""The bot's web server: route groups for webhooks, health and metrics."""
