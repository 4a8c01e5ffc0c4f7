"""Global user/item embedding store shared by trainer and serving (torch-free)."""
