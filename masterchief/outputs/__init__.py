"""Where announcements leave: formatters, the durable outbox, targets."""
