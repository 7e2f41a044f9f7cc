"""patchwork.evaluation"""
