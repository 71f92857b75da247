"""Slack: review messages, the Web API client and (later) the interactive review app."""
