"""The Subscription admin is registered in asiri/admin.py: its actions reach into deliveries."""
