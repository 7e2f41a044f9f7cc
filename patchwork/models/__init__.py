"""patchwork.models"""
