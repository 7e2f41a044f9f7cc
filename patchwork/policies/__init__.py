"""patchwork.policies"""
