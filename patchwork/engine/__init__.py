"""patchwork.engine"""
