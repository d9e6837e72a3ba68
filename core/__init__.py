"""Building blocks beneath every app: nothing here imports tenants, webhooks, deliveries or asiri."""
