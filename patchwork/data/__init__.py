"""patchwork.data"""
