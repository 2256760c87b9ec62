"""The demo's three apps. Each reads its database DSN and its peers' URLs from the environment."""
