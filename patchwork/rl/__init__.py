"""patchwork.rl"""
